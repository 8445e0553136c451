"""Card-expiry warnings (issue 12, §4): before a card's expiry month ends (the space's days,
else CARD_EXPIRY_WARNING_DAYS) its customer gets one email with a single-use registration
link, whatever beats run twice; expired, replaced and far-off cards get none; staff see the
cards expiring with the recurring lines and running collections that depend on them."""

from datetime import UTC, date, datetime

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.urls import reverse

from billing import services as billing_services
from cards import services, tasks
from cards.models import CardEvent, CardInvitation, PaymentCard
from chargeflows.models import ChargeFlow, ChargeFlowCase
from recurring import services as recurring_services
from spaces.roles import ADMIN, CLERK
from tests.chargeflows.conftest import VISA, real_card, real_customer
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

# 20 days before the end of June 2027.
TODAY = datetime(2027, 6, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def space():
    return SpaceFactory(name="Shop", slug="shop")


@pytest.fixture
def travel():
    with time_machine.travel(TODAY, tick=False):
        yield


def card(space, *, month, year=2027, language="en", customer=None, **kwargs):
    customer = customer or CustomerFactory(space=space, preferred_language=language)
    return PaymentCardFactory(customer=customer, exp_month=month, exp_year=year, **kwargs)


def run_beat(django_capture_on_commit_callbacks) -> int:
    with django_capture_on_commit_callbacks(execute=True):
        return tasks.payment_card_expiry_warnings_send()


def test_a_card_expiring_within_30_days_gets_exactly_one_email_when_the_task_runs_twice(
    space, travel, django_capture_on_commit_callbacks
):
    expiring = card(space, month=6)

    assert run_beat(django_capture_on_commit_callbacks) == 1
    assert run_beat(django_capture_on_commit_callbacks) == 0

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [expiring.customer.email]
    assert "expires soon" in message.subject
    assert "Visa card ending in 4242" in message.body and "/register/invite/" in message.body
    invitation = CardInvitation.objects.get(customer=expiring.customer)
    assert services.card_invitation_url(invitation) in message.body
    expiring.refresh_from_db()
    assert expiring.expiry_warning_sent_at is not None
    event = CardEvent.objects.get(kind=CardEvent.Kind.EXPIRY_WARNING_SENT)
    assert event.card == expiring and event.detail["invitation"] == str(invitation.public_id)


def test_the_warning_is_in_the_customers_language(
    space, travel, django_capture_on_commit_callbacks
):
    card(space, month=6, language="de")
    assert run_beat(django_capture_on_commit_callbacks) == 1
    message = mail.outbox[0]
    assert "läuft bald ab" in message.subject
    assert "Visa-Karte mit der Endung 4242" in message.body
    assert "Neue Karte hinterlegen" in message.alternatives[0][0]


def test_cards_outside_the_window_expired_or_replaced_get_no_email(
    space, travel, django_capture_on_commit_callbacks
):
    card(space, month=8)  # ends 31 August: 82 days away
    card(space, month=5)  # its month is over (the expire task may not have run yet)
    card(space, month=6, status=PaymentCard.Status.EXPIRED)
    card(space, month=6, status=PaymentCard.Status.DETACHED, is_default=False)
    replaced = card(space, month=6)
    card(space, month=3, year=2030, customer=replaced.customer, is_default=False)

    assert run_beat(django_capture_on_commit_callbacks) == 0
    assert mail.outbox == []
    assert not PaymentCard.objects.exclude(expiry_warning_sent_at=None).exists()


def test_the_days_come_from_the_space_then_the_setting(
    space, settings, travel, django_capture_on_commit_callbacks
):
    settings.CARD_EXPIRY_WARNING_DAYS = 10
    card(space, month=6)  # 20 days: outside 10
    other = SpaceFactory(name="Other", slug="other", card_expiry_warning_days=60)
    july = card(other, month=7)  # 51 days: inside the space's 60

    assert run_beat(django_capture_on_commit_callbacks) == 1
    assert [m.to for m in mail.outbox] == [[july.customer.email]]


def test_a_new_expiry_from_the_card_updater_clears_the_marker(space, travel):
    customer = real_customer(space)
    expiring = real_card(customer, VISA)  # 06/2034 at the provider
    PaymentCard.objects.filter(pk=expiring.pk).update(exp_month=6, exp_year=2027)
    assert services.payment_card_expiry_warn(card_id=expiring.pk)
    assert not services.payment_card_expiry_warn(card_id=expiring.pk)  # once

    # The provider's card updater reports the renewed card: the marker was the old expiry's.
    assert services.payment_card_sync_from_provider(
        payment_method_id=expiring.provider_payment_method_id,
        event_type="payment_method.automatically_updated",
    )
    expiring.refresh_from_db()
    assert (expiring.exp_month, expiring.exp_year) == (6, 2034)
    assert expiring.expiry_warning_sent_at is None


# --- The staff list ---------------------------------------------------------------------------


def test_staff_see_expiring_cards_with_their_lines_and_collections_only_in_their_space(
    space, travel
):
    clerk = StaffUserFactory(username="xclerk", role=CLERK, spaces=[space])
    admin_user = StaffUserFactory(username="xadmin", role=ADMIN, spaces=[space])
    expiring = card(space, month=6)
    far = card(space, month=12, year=2031)
    other_space = SpaceFactory(name="Other", slug="other")
    foreign = card(other_space, month=6)
    line = recurring_services.recurring_line_create(
        customer=expiring.customer,
        amount_minor=4990,
        currency="EUR",
        charge_date=date(2027, 6, 20),
        card=expiring,
        acting_user=clerk,
    )
    issue = billing_services.charge_issue_start(
        customer=expiring.customer, card=expiring, source="staff"
    )
    # A running collection of that issue (the flow runner's own row shape).
    case = ChargeFlowCase.objects.create(
        space=space,
        issue=issue,
        flow=ChargeFlow.objects.get(space=space),
        recipient_email=expiring.customer.email,
    )

    client = Client()
    client.force_login(admin_user)
    response = client.get(reverse("admin:recurring_expiringcard_changelist"))

    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    assert [c.pk for c in shown] == [expiring.pk]  # not the far one, not the other space's
    assert far.pk not in {c.pk for c in shown} and foreign.pk not in {c.pk for c in shown}
    text = response.content.decode()
    assert reverse("admin:recurring_recurringline_change", args=[line.pk]) in text
    assert reverse("admin:chargeflows_chargeflowcase_change", args=[case.pk]) in text
    assert "49.90" in text
