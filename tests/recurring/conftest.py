from datetime import date, timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from cards import services as card_services
from cards.models import PaymentCard
from cards.signals import payment_card_added
from recurring import services
from spaces.roles import ADMIN, APPROVER, CLERK
from tests.billing.conftest import space  # noqa: F401 - shared fixture
from tests.conftest import confirm_setup_intent
from tests.factories import CustomerFactory, PaymentCardFactory, StaffUserFactory

VISA = "4242424242424242"
SEED_KEY = "0283759-Mastercard-4242-06/25"


@pytest.fixture
def clerk(space):  # noqa: F811
    return StaffUserFactory(username="rclerk", role=CLERK, spaces=[space])


@pytest.fixture
def approver(space):  # noqa: F811
    return StaffUserFactory(username="rapprover", role=APPROVER, spaces=[space])


@pytest.fixture
def space_admin(space):  # noqa: F811
    return StaffUserFactory(username="radmin", role=ADMIN, spaces=[space])


@pytest.fixture
def seed_customer(space):  # noqa: F811
    return CustomerFactory(space=space, name="Seed Kunde", external_number="0283759")


def soon(days=10) -> date:
    return timezone.localdate() + timedelta(days=days)


@pytest.fixture
def make_line(clerk):
    def make(customer, *, card=None, key="", amount=4990, charge_date=None, **kwargs):
        return services.recurring_line_create(
            customer=customer,
            amount_minor=amount,
            currency="EUR",
            charge_date=charge_date or soon(),
            card=card,
            card_lookup_key=key,
            acting_user=clerk,
            **kwargs,
        )

    return make


@pytest.fixture
def seed_card(seed_customer):
    """The seed's card, made directly: localstripe reports every brand as "visa", so the
    Mastercard of seed 003's key cannot come from it (the end-to-end tests use Visa)."""

    def make(
        *, brand="Mastercard", last4="4242", exp_month=6, exp_year=2025, customer=None, new=False
    ):
        with transaction.atomic():
            card = PaymentCardFactory(
                customer=customer or seed_customer,
                brand=brand,
                last4=last4,
                exp_month=exp_month,
                exp_year=exp_year,
                is_default=False,
            )
            if new:
                # What cards' registration does inside its transaction (tested end to end
                # with localstripe in test_matching.py).
                payment_card_added.send(sender=PaymentCard, card=card)
        return card

    return make


@pytest.fixture
def register_for(localstripe, django_capture_on_commit_callbacks, clerk):
    """Register a card for a known customer through an invitation, as the customer would
    (localstripe; the page's steps called directly)."""

    def register(customer, *, number=VISA, exp_month=6, exp_year=2034):
        invitation = card_services.card_invitation_send(
            customer=customer, acting_user=clerk, email=False
        )
        intent = card_services.registration_setup_intent_start(
            space=customer.space, invitation=invitation
        )
        confirm_setup_intent(
            localstripe, intent.client_secret, number, exp_month=exp_month, exp_year=exp_year
        )
        with django_capture_on_commit_callbacks(execute=True):
            return card_services.card_registration_complete(
                space=customer.space, setup_intent_id=intent.id, invitation=invitation
            )

    return register
