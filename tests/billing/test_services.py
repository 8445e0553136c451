import threading
from datetime import timedelta

import pytest
import stripe
from django.contrib.auth.models import Group
from django.core import mail
from django.db import connection
from django.utils import timezone

from billing import services, tasks
from billing.exceptions import (
    IllegalTransition,
    InvalidAmount,
    InvalidInput,
    NotAllowed,
    SelfApprovalRefused,
)
from billing.models import TRANSITIONS, ChargeIssue, ChargeIssueEvent
from cards import services as card_services
from cards.models import CardEvent
from payments import attempts, gateway
from payments.models import ChargeAttempt
from spaces.roles import APPROVER, CLERK
from tests.billing.conftest import DECLINES_ON_CHARGE, payment_intents_for
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db
State = ChargeIssue.State


@pytest.fixture(autouse=True, params=["single_statement", "orm"])
def charging_path(request, monkeypatch):
    """Every test here runs on both charging paths: PostgreSQL's single statements and the ORM
    path the local SQLite run uses."""
    if request.param == "orm":
        monkeypatch.setattr(attempts, "SINGLE_STATEMENT_VENDORS", set())
    return request.param


def _enter(issue, clerk, amount="12.34", currency="EUR", **kwargs):
    return services.charge_amount_enter(
        issue=issue,
        acting_user=clerk,
        amount=amount,
        currency=currency,
        notification_subject=kwargs.pop("subject", "Your monthly order"),
        notification_body=kwargs.pop("body", "We will charge your card for this month."),
        **kwargs,
    )


@pytest.fixture
def approved_issue(space, clerk, approver, register_card):
    """An approved issue whose charge has not run (its charge date is in the future)."""
    register_card(space)
    issue = ChargeIssue.objects.get()
    _enter(issue, clerk, charge_date=timezone.now() + timedelta(days=1))
    services.charge_issue_approve(issue=issue, acting_user=approver)
    ChargeIssue.objects.filter(pk=issue.pk).update(charge_date=timezone.now())
    issue.refresh_from_db()
    return issue


# --- Start ------------------------------------------------------------------------------------


def test_a_registered_card_starts_one_issue_with_the_customers_data(space, register_card):
    registration = register_card(space, name="Kim Kunde", email="kim@example.test")

    issue = ChargeIssue.objects.get()
    customer = registration.customer
    assert issue.state == State.AWAITING_AMOUNT
    assert (issue.customer_name, issue.customer_email) == ("Kim Kunde", "kim@example.test")
    assert issue.provider_customer_id == customer.provider_customer_id
    assert issue.card_last4 == "4242" and issue.card == registration.card
    assert issue.source == ChargeIssue.Source.CARD_REGISTERED
    event = CardEvent.objects.get(kind=CardEvent.Kind.CARD_REGISTERED)
    assert issue.started_by_event == event

    # The same event dispatched again (a redelivered message) starts nothing more.
    CardEvent.objects.filter(pk=event.pk).update(dispatched_at=None)
    card_services.card_event_dispatch(event_id=event.pk)
    assert ChargeIssue.objects.count() == 1
    assert [e.action for e in issue.events.all()] == ["started"]


# --- State machine ----------------------------------------------------------------------------


def test_every_state_has_a_declared_transition_row():
    assert set(TRANSITIONS) == set(State.values)


def test_the_whole_human_path_is_audited_with_its_users(space, clerk, approver, register_card):
    register_card(space)
    issue = ChargeIssue.objects.get()

    _enter(issue, clerk, amount="10.00")
    services.charge_issue_return(issue=issue, acting_user=approver, comment="Wrong amount")
    _enter(issue, clerk, amount="12.00")
    services.charge_issue_approve(issue=ChargeIssue.objects.get(), acting_user=approver)

    issue.refresh_from_db()
    assert issue.amount_minor == 1200 and issue.entered_by == clerk
    events = list(issue.events.values_list("action", "actor__username", "from_state", "to_state"))
    assert events[:5] == [
        ("started", None, "", "awaiting_amount"),
        ("amount_entered", "clerk1", "awaiting_amount", "awaiting_approval"),
        ("returned", "approver1", "awaiting_approval", "returned"),
        ("amount_entered", "clerk1", "returned", "awaiting_approval"),
        ("approved", "approver1", "awaiting_approval", "approved"),
    ]
    assert issue.events.get(action="returned").comment == "Wrong amount"


def test_illegal_transitions_are_refused_and_change_nothing(space, clerk, approver, register_card):
    register_card(space)
    issue = ChargeIssue.objects.get()

    with pytest.raises(IllegalTransition):
        services.charge_issue_approve(issue=issue, acting_user=approver)  # no amount yet
    _enter(issue, clerk)
    with pytest.raises(IllegalTransition):
        _enter(ChargeIssue.objects.get(), clerk)  # already waiting for approval
    services.charge_issue_cancel(issue=issue, acting_user=clerk, comment="Customer left")
    with pytest.raises(IllegalTransition):
        services.charge_issue_approve(issue=ChargeIssue.objects.get(), acting_user=approver)

    issue.refresh_from_db()
    assert issue.state == State.CANCELLED
    assert issue.events.count() == 3  # started, amount_entered, cancelled


def test_a_finished_issue_cannot_be_charged_or_cancelled(approved_issue, clerk):
    services.charge_issue_charge(issue_id=approved_issue.pk)
    approved_issue.refresh_from_db()

    assert approved_issue.state == State.SUCCEEDED
    with pytest.raises(IllegalTransition):
        services.charge_issue_cancel(issue=approved_issue, acting_user=clerk)


# --- Four eyes and roles ----------------------------------------------------------------------


def test_the_user_who_entered_the_amount_can_never_approve_it(space, register_card):
    both = StaffUserFactory(username="both", spaces=[space])
    both.groups.add(*Group.objects.filter(name__in=[CLERK, APPROVER]))
    register_card(space)
    issue = ChargeIssue.objects.get()
    _enter(issue, both)

    with pytest.raises(SelfApprovalRefused):
        services.charge_issue_approve(issue=ChargeIssue.objects.get(), acting_user=both)

    issue.refresh_from_db()
    assert issue.state == State.AWAITING_APPROVAL and issue.approved_by is None
    refused = issue.events.get(action="approval_refused")
    assert refused.actor == both


def test_a_clerk_cannot_approve_and_an_approver_cannot_enter(space, clerk, approver, register_card):
    register_card(space)
    issue = ChargeIssue.objects.get()

    with pytest.raises(NotAllowed):
        _enter(issue, approver)
    _enter(issue, clerk)
    other_clerk = StaffUserFactory(role=CLERK, spaces=[space])
    with pytest.raises(NotAllowed):
        services.charge_issue_approve(issue=ChargeIssue.objects.get(), acting_user=other_clerk)


def test_staff_of_another_space_cannot_act_on_an_issue(space, register_card):
    register_card(space)
    issue = ChargeIssue.objects.get()
    outsider = StaffUserFactory(role=CLERK, spaces=[SpaceFactory()])

    with pytest.raises(NotAllowed):
        _enter(issue, outsider)
    assert ChargeIssue.objects.get().state == State.AWAITING_AMOUNT


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("12.345", "EUR", "at most 2 decimal places"),
        ("-1", "EUR", "more than zero"),
        ("0", "EUR", "more than zero"),
        ("10000.01", "EUR", "maximum"),
        ("12.5", "JPY", "no decimal places"),
    ],
)
def test_bad_amounts_are_refused_and_change_nothing(
    space, clerk, register_card, amount, currency, message
):
    register_card(space)
    issue = ChargeIssue.objects.get()

    with pytest.raises(InvalidAmount, match=message) as refused:
        _enter(issue, clerk, amount=amount, currency=currency)

    assert refused.value.field == "amount"
    issue.refresh_from_db()
    assert issue.state == State.AWAITING_AMOUNT and issue.amount_minor is None
    assert issue.events.count() == 1


def test_yen_amounts_have_no_decimals(space, clerk, register_card):
    register_card(space)

    issue = _enter(ChargeIssue.objects.get(), clerk, amount="5000", currency="JPY")

    assert (issue.amount_minor, issue.currency, issue.amount_display) == (5000, "JPY", "5,000 JPY")


# --- 1r. restart ------------------------------------------------------------------------------


def test_restart_copies_the_data_into_a_new_issue_and_leaves_the_old_one(approved_issue, clerk):
    services.charge_issue_charge(issue_id=approved_issue.pk)
    old = ChargeIssue.objects.get(pk=approved_issue.pk)
    old_events = old.events.count()

    new = services.charge_issue_restart(issue=old, acting_user=clerk)

    assert new.pk != old.pk and new.restarted_from == old
    assert new.state == State.AWAITING_AMOUNT and new.charge_date is None
    for field in ("customer", "card", "customer_name", "customer_email", "provider_customer_id",
                  "card_last4", "amount_minor", "currency", "notification_subject",
                  "notification_body"):  # fmt: skip
        assert getattr(new, field) == getattr(old, field), field
    reloaded = ChargeIssue.objects.get(pk=old.pk)
    assert reloaded.state == State.SUCCEEDED and reloaded.events.count() == old_events
    assert new.events.get().detail == {"source": "restart", "restarted_from": old.pk}


def test_an_unfinished_issue_cannot_be_restarted(approved_issue, clerk):
    with pytest.raises(IllegalTransition):
        services.charge_issue_restart(issue=approved_issue, acting_user=clerk)


# --- Charging ---------------------------------------------------------------------------------


def test_approval_charges_at_once_and_emails_notification_and_receipt(
    space, clerk, approver, register_card, localstripe, django_capture_on_commit_callbacks
):
    register_card(space, email="kim@example.test")
    issue = _enter(ChargeIssue.objects.get(), clerk, amount="49.90", subject="Order 7")

    with django_capture_on_commit_callbacks(execute=True):
        services.charge_issue_approve(issue=issue, acting_user=approver)

    issue.refresh_from_db()
    assert issue.state == State.SUCCEEDED
    [intent] = payment_intents_for(localstripe, issue)
    assert (intent["amount"], intent["currency"], intent["status"]) == (4990, "eur", "succeeded")
    assert intent["id"] == issue.attempt.provider_payment_intent_id
    assert [m.subject for m in mail.outbox] == ["Order 7", "Shop: receipt for €49.90"]
    assert all(m.to == ["kim@example.test"] for m in mail.outbox)
    assert "We will charge your card for this month." in mail.outbox[0].body
    assert "€49.90" in mail.outbox[0].body and "4242" in mail.outbox[1].body


def test_a_future_charge_date_waits_for_the_beat(
    space, clerk, approver, register_card, localstripe, django_capture_on_commit_callbacks
):
    register_card(space)
    issue = _enter(
        ChargeIssue.objects.get(), clerk, charge_date=timezone.now() + timedelta(hours=2)
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.charge_issue_approve(issue=issue, acting_user=approver)

    assert services.charge_issue_charge(issue_id=issue.pk) is None
    assert services.charge_issues_due_dispatch() == 0
    ChargeIssue.objects.filter(pk=issue.pk).update(charge_date=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert services.charge_issues_due_dispatch() == 1

    issue.refresh_from_db()
    assert issue.state == State.SUCCEEDED and len(payment_intents_for(localstripe, issue)) == 1


def test_a_declined_card_goes_to_collection_with_the_reason(
    space, clerk, approver, register_card, localstripe, django_capture_on_commit_callbacks
):
    register_card(space, number=DECLINES_ON_CHARGE)
    issue = _enter(ChargeIssue.objects.get(), clerk)

    with django_capture_on_commit_callbacks(execute=True):
        services.charge_issue_approve(issue=issue, acting_user=approver)

    issue.refresh_from_db()
    assert issue.state == State.COLLECTING
    assert issue.failure_code == "card_declined"
    assert issue.events.get(action="charge_failed").to_state == State.COLLECTING
    assert issue.flow_case.flow.is_default
    # Staff hear when the collection ends, not at this first failure.
    assert not [m for m in mail.outbox if clerk.email in m.to and "failed" in m.subject]


def test_a_declined_card_nothing_collects_fails_the_issue_with_the_reason_and_tells_staff(
    space,
    clerk,
    approver,
    register_card,
    localstripe,
    django_capture_on_commit_callbacks,
    nothing_collects,
):
    register_card(space, number=DECLINES_ON_CHARGE)
    issue = _enter(ChargeIssue.objects.get(), clerk)

    with django_capture_on_commit_callbacks(execute=True):
        services.charge_issue_approve(issue=issue, acting_user=approver)

    issue.refresh_from_db()
    assert issue.state == State.FAILED
    assert issue.failure_code == "card_declined"
    assert issue.failure_message == "Your card was declined."
    assert issue.attempt.status == ChargeAttempt.Status.FAILED
    failed = issue.events.get(action="charge_failed")
    assert failed.detail["code"] == "card_declined"
    staff_notice = [m for m in mail.outbox if "failed" in m.subject]
    assert len(staff_notice) == 1
    assert set(staff_notice[0].to) == {clerk.email, approver.email}
    assert "Your card was declined." in staff_notice[0].body


@pytest.mark.parametrize(
    ("decline_code", "hard"),
    [("stolen_card", True), ("fraudulent", True), ("insufficient_funds", False)],
)
def test_hard_and_soft_declines_are_told_apart(decline_code, hard):
    result = gateway.ChargeResult(
        succeeded=False, payment_intent_id="pi_x", status="requires_payment_method",
        failure_code="card_declined", decline_code=decline_code,
    )  # fmt: skip

    assert result.hard_decline is hard


# --- Exactly once -----------------------------------------------------------------------------


def test_the_charge_task_delivered_twice_charges_once(approved_issue, localstripe):
    assert tasks.charge_issue_charge(approved_issue.pk) is True
    assert tasks.charge_issue_charge(approved_issue.pk) is False

    approved_issue.refresh_from_db()
    assert approved_issue.state == State.SUCCEEDED
    assert len(payment_intents_for(localstripe, approved_issue)) == 1
    assert ChargeAttempt.objects.filter(charge_issue=approved_issue).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_on_postgresql_charge_once(localstripe):
    space = SpaceFactory()
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    approver = StaffUserFactory(role=APPROVER, spaces=[space])
    customer = CustomerFactory(space=space)
    # A real provider customer and card, so the charge can succeed at localstripe.
    customer.provider_customer_id = gateway.client().v1.customers.create(params={}).id
    customer.save()
    pm = gateway.client().v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 6, "exp_year": 2034, "cvc": "123"},
        }  # fmt: skip
    )
    gateway.payment_method_attach(
        payment_method_id=pm.id, customer_id=customer.provider_customer_id
    )
    card = PaymentCardFactory(customer=customer, provider_payment_method_id=pm.id)
    issue = services.charge_issue_start(customer=customer, card=card, source="staff")
    _enter(issue, clerk, charge_date=timezone.now() + timedelta(days=1))
    services.charge_issue_approve(issue=ChargeIssue.objects.get(), acting_user=approver)
    ChargeIssue.objects.filter(pk=issue.pk).update(charge_date=timezone.now())

    barrier = threading.Barrier(4)
    outcomes, errors = [], []

    def worker():
        try:
            barrier.wait()
            outcomes.append(services.charge_issue_charge(issue_id=issue.pk) is not None)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(outcomes) == [False, False, False, True]
    assert ChargeIssue.objects.get(pk=issue.pk).state == State.SUCCEEDED
    assert len(payment_intents_for(localstripe, issue)) == 1


def test_a_crash_after_the_provider_call_is_settled_by_the_reconciler_without_a_second_charge(
    approved_issue, localstripe, monkeypatch
):
    real_record = attempts.attempt_record

    def crash(**kwargs):
        # Fault injection: the worker dies after the provider charged, before our commit.
        raise SystemExit("worker killed")

    monkeypatch.setattr(attempts, "attempt_record", crash)
    with pytest.raises(SystemExit):
        services.charge_issue_charge(issue_id=approved_issue.pk)
    monkeypatch.setattr(attempts, "attempt_record", real_record)

    approved_issue.refresh_from_db()
    assert approved_issue.state == State.CHARGING
    assert approved_issue.attempt.status == ChargeAttempt.Status.PENDING
    assert len(payment_intents_for(localstripe, approved_issue)) == 1

    # Redelivered task and beat sweeps: nothing may charge again while the outcome is unknown.
    assert services.charge_issue_charge(issue_id=approved_issue.pk) is None
    assert attempts.attempts_reconcile() == 0  # too recent: its call might still land
    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 1

    approved_issue.refresh_from_db()
    assert approved_issue.state == State.SUCCEEDED
    assert approved_issue.attempt.status == ChargeAttempt.Status.SUCCEEDED
    intents = payment_intents_for(localstripe, approved_issue)
    assert len(intents) == 1
    assert approved_issue.attempt.provider_payment_intent_id == intents[0]["id"]
    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 0


def test_a_call_that_never_reached_the_provider_is_made_again_by_the_reconciler(
    approved_issue, localstripe, monkeypatch
):
    def unreachable(**kwargs):
        raise stripe.APIConnectionError("injected: connection refused")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gateway, "payment_intent_charge_off_session", unreachable)
        services.charge_issue_charge(issue_id=approved_issue.pk)

    attempt = ChargeAttempt.objects.get(charge_issue=approved_issue)
    assert attempt.status == ChargeAttempt.Status.UNKNOWN
    assert attempt.last_error == "APIConnectionError"
    assert payment_intents_for(localstripe, approved_issue) == []

    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 1

    approved_issue.refresh_from_db()
    assert approved_issue.state == State.SUCCEEDED
    assert len(payment_intents_for(localstripe, approved_issue)) == 1


def test_audit_rows_exist_for_every_money_step(approved_issue):
    services.charge_issue_charge(issue_id=approved_issue.pk)

    actions = list(
        ChargeIssueEvent.objects.filter(issue=approved_issue).values_list("action", flat=True)
    )
    assert actions == [
        "started",
        "amount_entered",
        "approved",
        "charge_started",
        "charge_succeeded",
    ]


def test_customer_emails_are_in_the_customers_language(
    space, clerk, approver, register_card, django_capture_on_commit_callbacks
):
    registration = register_card(space)
    registration.customer.preferred_language = "de"
    registration.customer.save()
    issue = _enter(ChargeIssue.objects.get(), clerk, amount="12.34", subject="")

    with django_capture_on_commit_callbacks(execute=True):
        services.charge_issue_approve(issue=issue, acting_user=approver)

    notification, receipt = mail.outbox
    assert notification.subject == "Shop: bevorstehende Kartenbelastung"
    assert "Betrag: 12,34\xa0€" in notification.body
    assert receipt.subject == "Shop: Beleg über 12,34 €"
    assert "Wir haben 12,34\xa0€ von Ihrer Karte mit den Endziffern 4242 abgebucht." in receipt.body


def test_a_past_charge_date_is_refused(space, clerk, register_card):
    register_card(space)

    with pytest.raises(InvalidInput) as refused:
        _enter(ChargeIssue.objects.get(), clerk, charge_date=timezone.now() - timedelta(hours=1))

    assert refused.value.field == "charge_date"
    assert ChargeIssue.objects.get().state == State.AWAITING_AMOUNT


def test_returning_needs_a_comment(space, clerk, approver, register_card):
    register_card(space)
    _enter(ChargeIssue.objects.get(), clerk)

    with pytest.raises(InvalidInput) as refused:
        services.charge_issue_return(
            issue=ChargeIssue.objects.get(), acting_user=approver, comment=" "
        )

    assert refused.value.field == "comment"
    assert ChargeIssue.objects.get().state == State.AWAITING_APPROVAL
