"""Level step 2 with a SEPA Direct Debit account, against localstripe.

What localstripe (resources.py) does with sepa_debit, which these tests rely on:
- PaymentMethod type sepa_debit takes {"iban": ...} and keeps country, bank_code, last4 and a
  fingerprint; SetupIntents accept payment_method_types ["sepa_debit"];
- Charge._initialize_charge: an authorised SEPA debit is `succeeded` at once, so its
  PaymentIntent is `succeeded` when created (payment_intent.succeeded follows 0.5 s later);
- IBAN DE62370400440532013001 is declined (_charging_is_declined), but only after 0.5 s:
  its PaymentIntent is created `processing` and turns `requires_payment_method`
  (card_declined) with a payment_intent.payment_failed event.
So the success of a SEPA debit is immediate here (on Stripe it is `processing` for days and
settles by webhook, the same path the declining IBAN takes here).
"""

import time
from datetime import timedelta

import pytest
import time_machine

from billing.models import ChargeIssue
from cards.models import SepaDebitMethod
from chargeflows import services
from chargeflows.models import ChargeFlow, ChargeFlowCase, ChargeFlowLevel
from chargeflows.models import ChargeFlowLevelConfiguration as LevelConfiguration
from payments import attempts, gateway
from payments.models import ChargeAttempt
from tests.chargeflows.conftest import (
    DECLINES,
    approved_issue,
    intents_for_issue,
    one_level_flow,
    real_card,
    real_customer,
)
from tests.chargeflows.test_services import _beat, _collect
from tests.payments.conftest import event_for, signed_post

pytestmark = pytest.mark.django_db
Case = ChargeFlowCase.State
Level = ChargeFlowLevel.State
Step = ChargeFlowLevel.Step
Status = ChargeAttempt.Status

GOOD_IBAN = "DE89370400440532013000"
DECLINING_IBAN = "DE62370400440532013001"


def real_sepa(customer, iban) -> SepaDebitMethod:
    """A SEPA account attached at localstripe (as cards.services.sepa_debit_method_add leaves
    it) and its row."""
    pm = gateway.client().v1.payment_methods.create(
        params={"type": "sepa_debit", "sepa_debit": {"iban": iban}}
    )
    gateway.payment_method_attach(
        payment_method_id=pm.id, customer_id=customer.provider_customer_id
    )
    return SepaDebitMethod.objects.create(
        space=customer.space,
        customer=customer,
        provider_payment_method_id=pm.id,
        setup_intent_id=f"seti_test_{pm.id}",
        country=iban[:2],
        bank_code=iban[4:12],
        last4=iban[-4:],
    )


def two_level_flow(space) -> ChargeFlow:
    """Level 1: card, then the saved method; level 2: the saved method, then the link."""
    flow = ChargeFlow.objects.create(
        space=space, name="SEPA flow", priority=1, state=ChargeFlow.State.ACTIVE
    )
    LevelConfiguration.objects.create(
        flow=flow,
        name="Card and SEPA",
        priority=1,
        period=timedelta(days=3),
        run_token_charge=True,
        run_saved_method=True,
    )
    LevelConfiguration.objects.create(
        flow=flow,
        name="SEPA and link",
        priority=2,
        period=timedelta(days=7),
        run_token_charge=False,
        run_saved_method=True,
        run_payment_link=True,
    )
    return flow


def _intents_by_level(localstripe, issue) -> list[tuple[str, str]]:
    return sorted(
        (pi["metadata"]["charge_flow_level"], pi["payment_method"])
        for pi in intents_for_issue(localstripe, issue)
    )


def _provider_settles(intent_id: str) -> dict:
    """localstripe declines the debit 0.5 s after creating it: wait for that."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        intent = gateway.client().v1.payment_intents.retrieve(intent_id).to_dict()
        if intent["status"] != "processing":
            return intent
        time.sleep(0.1)
    raise AssertionError(f"{intent_id} still processing at localstripe")


def test_the_card_declines_and_the_sepa_account_collects(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    card = real_card(customer, DECLINES)
    account = real_sepa(customer, GOOD_IBAN)
    issue = approved_issue(customer, card, clerk, approver)
    one_level_flow(space, run_token_charge=True, run_saved_method=True, run_payment_link=True)

    case = _collect(issue, approver, django_capture_on_commit_callbacks)

    case.refresh_from_db()
    issue.refresh_from_db()
    assert (case.state, issue.state) == (Case.SUCCEEDED, ChargeIssue.State.SUCCEEDED)
    level = case.levels.get()
    assert level.state == Level.SUCCESSFUL and not hasattr(level, "payment_link")
    attempts_ = list(level.attempts.order_by("pk"))
    assert [(a.provider_payment_method_id, a.status) for a in attempts_] == [
        (card.provider_payment_method_id, Status.FAILED),
        (account.provider_payment_method_id, Status.SUCCEEDED),
    ]
    assert attempts_[1].amount_minor == 1234  # the approved amount, never another
    # Exactly one PaymentIntent per charged step of the level.
    assert _intents_by_level(localstripe, issue) == sorted(
        [
            (str(level.pk), card.provider_payment_method_id),
            (str(level.pk), account.provider_payment_method_id),
        ]
    )


def test_a_processing_debit_keeps_the_level_waiting_until_settled_then_the_next_level(
    client, space, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    card = real_card(customer, DECLINES)
    account = real_sepa(customer, DECLINING_IBAN)
    issue = approved_issue(customer, card, clerk, approver)
    two_level_flow(space)

    case = _collect(issue, approver, django_capture_on_commit_callbacks)

    first = case.levels.get()
    debit = first.attempts.get(provider_payment_method_id=account.provider_payment_method_id)
    assert debit.status == Status.PROCESSING and debit.provider_payment_intent_id
    assert (first.state, first.step, first.due_at) == (Level.PENDING, Step.METHOD_CHARGING, None)

    # Processing: neither a redelivered run nor the beat after the period charges or ends it.
    assert services.flow_level_run(level_id=first.pk) is None
    with time_machine.travel(first.times_out_at + timedelta(minutes=1), tick=False):
        _beat(django_capture_on_commit_callbacks)
    first.refresh_from_db()
    assert (first.state, first.step) == (Level.PENDING, Step.METHOD_CHARGING)
    assert case.levels.count() == 1 and len(intents_for_issue(localstripe, issue)) == 2

    # The provider's payment_intent.payment_failed settles it (signed like Stripe's delivery).
    intent = _provider_settles(debit.provider_payment_intent_id)
    assert intent["status"] == "requires_payment_method"
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, event_for("payment_intent.payment_failed", intent))
    assert response.status_code == 200
    debit.refresh_from_db()
    first.refresh_from_db()
    assert debit.status == Status.FAILED and debit.failure_code == "card_declined"
    assert first.failures[-1]["step"] == "method" and first.failures[-1]["code"]
    assert (first.state, first.step) == (Level.PENDING, Step.WAITING)  # its period is not over

    # The period ends: level 2 starts exactly then and debits the account once more.
    with time_machine.travel(first.times_out_at + timedelta(seconds=30), tick=False):
        _beat(django_capture_on_commit_callbacks)
    first.refresh_from_db()
    second = case.levels.get(position=2)
    assert first.state == Level.FAILED and second.started_at == first.times_out_at
    (again,) = second.attempts.all()
    assert again.status == Status.PROCESSING and second.step == Step.METHOD_CHARGING
    assert _intents_by_level(localstripe, issue) == sorted(
        [
            (str(first.pk), card.provider_payment_method_id),
            (str(first.pk), account.provider_payment_method_id),
            (str(second.pk), account.provider_payment_method_id),
        ]
    )

    # This time the reconciler finds the decline; the level goes on to its payment link.
    _provider_settles(again.provider_payment_intent_id)
    later = first.times_out_at + timedelta(minutes=1)  # the attempt was made on the moved clock
    with time_machine.travel(later, tick=False), django_capture_on_commit_callbacks(execute=True):
        assert attempts.attempts_reconcile(older_than=timedelta(0)) == 1
    again.refresh_from_db()
    second.refresh_from_db()
    assert again.status == Status.FAILED
    assert second.step == Step.WAITING and hasattr(second, "payment_link")
    case.refresh_from_db()
    assert case.state == Case.RUNNING
    assert len(intents_for_issue(localstripe, issue)) == 3  # nothing charged twice


@pytest.mark.parametrize("detached", [False, True])
def test_a_second_card_goes_before_the_account_and_a_detached_account_is_never_debited(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks, detached
):
    customer = real_customer(space)
    card = real_card(customer, DECLINES)
    account = real_sepa(customer, GOOD_IBAN)
    issue = approved_issue(customer, card, clerk, approver)
    one_level_flow(space, run_token_charge=True, run_saved_method=True, run_payment_link=True)
    if detached:
        account.status = SepaDebitMethod.Status.DETACHED
        account.save(update_fields=["status"])
        expected = [card.provider_payment_method_id]  # no saved method left: the link
    else:
        second_card = real_card(customer, DECLINES, is_default=False)
        expected = [card.provider_payment_method_id, second_card.provider_payment_method_id]

    case = _collect(issue, approver, django_capture_on_commit_callbacks)

    level = case.levels.get()
    assert [a.provider_payment_method_id for a in level.attempts.order_by("pk")] == expected
    assert level.step == Step.WAITING and hasattr(level, "payment_link")
    intents = intents_for_issue(localstripe, issue)
    assert sorted(pi["payment_method"] for pi in intents) == sorted(expected)
