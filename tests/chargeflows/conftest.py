from datetime import timedelta

import pytest
from django.utils import timezone

from billing import services as billing_services
from billing.models import ChargeIssue
from chargeflows.models import ChargeFlow, ChargeFlowLevelConfiguration
from payments import gateway
from spaces.roles import ADMIN, APPROVER, CLERK
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

VISA = "4242424242424242"
DECLINES = "4000000000000341"  # attaches fine, declined when charged
AUTHENTICATION = "4000002500003155"  # off-session: authentication_required (soft)


@pytest.fixture
def space():
    return SpaceFactory(name="Shop", slug="shop", default_currency="EUR")


@pytest.fixture
def clerk(space):
    return StaffUserFactory(username="clerk1", role=CLERK, spaces=[space])


@pytest.fixture
def approver(space):
    return StaffUserFactory(username="approver1", role=APPROVER, spaces=[space])


@pytest.fixture
def flow_admin(space):
    return StaffUserFactory(username="admin1", role=ADMIN, spaces=[space])


def real_customer(space, **kwargs):
    customer = CustomerFactory(space=space, **kwargs)
    customer.provider_customer_id = gateway.client().v1.customers.create(params={}).id
    customer.save()
    return customer


def real_card(customer, number, **kwargs):
    """A card attached at localstripe (as a registration leaves it) and its row."""
    pm = gateway.client().v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 6, "exp_year": 2034, "cvc": "123"},
        }
    )
    gateway.payment_method_attach(
        payment_method_id=pm.id, customer_id=customer.provider_customer_id
    )
    return PaymentCardFactory(
        customer=customer, provider_payment_method_id=pm.id, last4=number[-4:], **kwargs
    )


def approved_issue(customer, card, clerk, approver, *, amount="12.34", currency="EUR"):
    """An approved issue whose own charge has not run (charge date tomorrow)."""
    issue = billing_services.charge_issue_start(customer=customer, card=card, source="staff")
    billing_services.charge_amount_enter(
        issue=issue,
        acting_user=clerk,
        amount=amount,
        currency=currency,
        notification_subject="Your order",
        notification_body="We charge your card on file.",
        charge_date=timezone.now() + timedelta(days=1),
    )
    return billing_services.charge_issue_approve(
        issue=ChargeIssue.objects.get(pk=issue.pk), acting_user=approver
    )


def one_level_flow(space, *, priority=1, **steps) -> ChargeFlow:
    """An active flow with one level (3 days) running the given steps."""
    flow = ChargeFlow.objects.create(
        space=space, name=f"Flow {priority}", priority=priority, state=ChargeFlow.State.ACTIVE
    )
    ChargeFlowLevelConfiguration.objects.create(
        flow=flow,
        name="Only level",
        priority=1,
        period=timedelta(days=3),
        **{
            "run_token_charge": False,
            "run_saved_method": False,
            "run_payment_link": False,
            **steps,
        },
    )
    return flow


def intents_for_issue(localstripe, issue) -> list[dict]:
    """Every PaymentIntent at localstripe charging this issue's customer."""
    return [
        pi
        for pi in localstripe.list("payment_intents")
        if pi.get("customer") == issue.provider_customer_id
    ]
