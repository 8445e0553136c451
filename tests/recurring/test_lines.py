"""Web side (create, edit, pause, resume, cancel with the card's key saved on the line) and the
stored PaymentCard.lookup_key kept current by the services that change its inputs."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from cards.models import CardEvent, PaymentCard
from recurring import services
from recurring.exceptions import IllegalTransition, InvalidInput, NotAllowed
from recurring.models import TRANSITIONS, RecurringEvent, RecurringLine
from recurring.schedule import next_charge_date
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory
from tests.recurring.conftest import SEED_KEY, soon

pytestmark = pytest.mark.django_db
Status = RecurringLine.Status


def test_the_card_stores_the_seeds_lookup_key(seed_card):
    card = seed_card()
    assert PaymentCard.objects.filter(lookup_key=SEED_KEY).get() == card
    other = PaymentCardFactory(customer=CustomerFactory(external_number=""), brand="Visa")
    assert other.lookup_key == f"{other.customer_id}-Visa-4242-06/34"


def test_a_customer_number_edit_moves_card_and_line_keys_audited(
    client, seed_customer, seed_card, make_line, clerk
):
    card = seed_card(exp_year=2034)
    with_card = make_line(seed_customer, card=card)
    waiting = make_line(seed_customer, key="0283759-Visa-1111-01/33")
    client.force_login(clerk)

    response = client.post(
        reverse("admin:cards_customer_change", args=[seed_customer.pk]),
        {
            "name": seed_customer.name,
            "email": seed_customer.email,
            "preferred_language": "en",
            "external_number": "0999001",
            "cards-TOTAL_FORMS": "1",
            "cards-INITIAL_FORMS": "1",
            "cards-MIN_NUM_FORMS": "0",
            "cards-MAX_NUM_FORMS": "1000",
            "cards-0-id": str(card.pk),
            "cards-0-customer": str(seed_customer.pk),
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    card.refresh_from_db()
    with_card.refresh_from_db()
    waiting.refresh_from_db()
    assert card.lookup_key == "0999001-Mastercard-4242-06/34"
    assert with_card.card_lookup_key == card.lookup_key and with_card.card == card
    assert waiting.card_lookup_key == "0999001-Visa-1111-01/33"
    event = CardEvent.objects.get(kind=CardEvent.Kind.CUSTOMER_NUMBER_CHANGED)
    assert event.acting_user == clerk and event.detail == {"before": "0283759", "after": "0999001"}
    assert RecurringEvent.objects.filter(action="key_moved").count() == 2


def test_create_with_a_card_saves_its_key_audited(seed_customer, seed_card, make_line, clerk):
    card = seed_card(exp_year=2034)
    line = make_line(seed_customer, card=card, description="Coffee beans")
    assert (line.card, line.card_lookup_key, line.status) == (card, card.lookup_key, Status.ACTIVE)
    assert (line.generation, line.generated_from) == (1, None)
    event = RecurringEvent.objects.get(line=line)
    assert (event.action, event.actor, event.detail["card_lookup_key"]) == (
        "created",
        clerk,
        card.lookup_key,
    )


def test_create_with_a_key_only_takes_the_matching_active_card_or_waits(
    seed_customer, seed_card, make_line
):
    waiting = make_line(seed_customer, key=SEED_KEY)
    assert waiting.card is None and waiting.card_lookup_key == SEED_KEY
    card = seed_card(exp_year=2034)
    filled = make_line(seed_customer, key=card.lookup_key)
    assert filled.card == card


@pytest.mark.parametrize(
    "change, field",
    [
        ({"amount": 10}, "amount"),
        ({"amount": "49.90"}, "amount"),
        ({"amount": 10**12}, "amount"),
        ({"currency": "XXX"}, "currency"),
        ({"charge_date": "yesterday"}, "charge_date"),
        ({"past": True}, "charge_date"),
        ({"interval": "daily"}, "interval"),
        ({"interval": "cron", "cron": "32 * *"}, "cron"),
        ({"interval": "monthly", "cron": "1 * *"}, "cron"),
        ({"key": "not a key"}, "card_lookup_key"),
        ({}, "card"),
    ],
)
def test_bad_input_is_refused_with_its_field_and_changes_nothing(
    seed_customer, clerk, change, field
):
    kwargs = {
        "customer": seed_customer,
        "amount_minor": change.get("amount", 4990),
        "currency": change.get("currency", "EUR"),
        "charge_date": change.get("charge_date", soon()),
        "interval": change.get("interval", "monthly"),
        "cron": change.get("cron", ""),
        "card_lookup_key": change.get("key", ""),
        "acting_user": clerk,
    }
    if change.get("past"):
        kwargs["charge_date"] = timezone.localdate() - timedelta(days=1)
    with pytest.raises(InvalidInput) as refused:
        services.recurring_line_create(**kwargs)
    assert refused.value.field == field
    assert not RecurringLine.objects.exists() and not RecurringEvent.objects.exists()


def test_another_customers_or_an_inactive_card_is_refused(seed_customer, seed_card, make_line):
    other = seed_card(customer=CustomerFactory(space=seed_customer.space), exp_year=2034)
    detached = seed_card(exp_year=2034)
    PaymentCard.objects.filter(pk=detached.pk).update(status=PaymentCard.Status.DETACHED)
    detached.refresh_from_db()
    for card in (other, detached):
        with pytest.raises(InvalidInput):
            make_line(seed_customer, card=card)
    assert not RecurringLine.objects.exists()


def test_staff_of_another_space_may_not_create_lines(seed_customer, seed_card):
    outsider = StaffUserFactory(role="clerk", spaces=[SpaceFactory()])
    with pytest.raises(NotAllowed):
        services.recurring_line_create(
            customer=seed_customer,
            amount_minor=4990,
            charge_date=soon(),
            card_lookup_key=SEED_KEY,
            acting_user=outsider,
        )


def test_edit_with_a_chosen_card_saves_its_key_and_audits_the_change(
    seed_customer, seed_card, make_line, clerk
):
    line = make_line(seed_customer, key=SEED_KEY)
    card = seed_card(last4="1881", exp_year=2034)
    services.recurring_line_edit(line=line, acting_user=clerk, card=card, amount_minor=5990)
    line.refresh_from_db()
    assert (line.card, line.card_lookup_key, line.amount_minor) == (card, card.lookup_key, 5990)
    edited = RecurringEvent.objects.get(line=line, action="edited")
    assert edited.detail["amount_minor"] == [4990, 5990]
    assert edited.detail["card_lookup_key"] == [SEED_KEY, card.lookup_key]


# --- The declared state machine: one test per transition, one per refused transition ------


def _line_in(status, make_line, customer):
    line = make_line(customer, key=SEED_KEY)
    RecurringLine.objects.filter(pk=line.pk).update(status=status)
    line.refresh_from_db()
    return line


ACTIONS = {
    Status.PAUSED: services.recurring_line_pause,
    Status.CANCELLED: services.recurring_line_cancel,
    Status.ACTIVE: services.recurring_line_resume,
}


@pytest.mark.parametrize(
    "from_status, to_status",
    [(f, t) for f, targets in TRANSITIONS.items() for t in targets if t in ACTIONS],
)
def test_each_declared_transition_works_and_is_audited(
    make_line, seed_customer, clerk, from_status, to_status
):
    line = _line_in(from_status, make_line, seed_customer)
    ACTIONS[to_status](line=line, acting_user=clerk)
    line.refresh_from_db()
    assert line.status == to_status
    event = RecurringEvent.objects.filter(line=line).last()
    assert (event.from_status, event.to_status, event.actor) == (from_status, to_status, clerk)


@pytest.mark.parametrize(
    "from_status, to_status",
    [(f, t) for f in TRANSITIONS for t in ACTIONS if t not in TRANSITIONS[f]],
)
def test_each_undeclared_transition_is_refused_and_changes_nothing(
    make_line, seed_customer, clerk, from_status, to_status
):
    line = _line_in(from_status, make_line, seed_customer)
    events = RecurringEvent.objects.count()
    with pytest.raises(IllegalTransition):
        ACTIONS[to_status](line=line, acting_user=clerk)
    line.refresh_from_db()
    assert line.status == from_status and RecurringEvent.objects.count() == events


def test_resume_moves_a_passed_charge_date_to_the_schedules_next(make_line, seed_customer, clerk):
    line = make_line(seed_customer, key=SEED_KEY, interval="weekly", charge_date=soon(1))
    services.recurring_line_pause(line=line, acting_user=clerk)
    past = timezone.localdate() - timedelta(days=3)
    RecurringLine.objects.filter(pk=line.pk).update(charge_date=past)
    services.recurring_line_resume(line=line, acting_user=clerk)
    line.refresh_from_db()
    assert line.charge_date == past + timedelta(days=7) and line.status == Status.ACTIVE


@pytest.mark.parametrize(
    "after, interval, cron, expected",
    [
        ("2026-01-31", "monthly", "", "2026-02-28"),
        ("2026-01-15", "weekly", "", "2026-01-22"),
        ("2024-02-29", "yearly", "", "2025-02-28"),
        ("2026-01-15", "cron", "1,15 * *", "2026-02-01"),
        ("2026-01-15", "cron", "0 6 * * 1", "2026-01-19"),  # five fields: Mondays
        ("2026-01-15", "cron", "* 3 *", "2026-03-01"),
    ],
)
def test_schedules(after, interval, cron, expected):
    from datetime import date

    assert next_charge_date(date.fromisoformat(after), interval=interval, cron=cron) == (
        date.fromisoformat(expected)
    )
