"""Refunds of succeeded charges (billing/refunds.py), against localstripe over HTTP."""

import threading
from datetime import timedelta

import pytest
import requests
import stripe
from django.conf import settings
from django.contrib.auth.models import Group
from django.core import mail
from django.db import IntegrityError, connection, transaction

from billing import refunds, services, tasks
from billing.exceptions import (
    IllegalTransition,
    InvalidAmount,
    InvalidInput,
    NotAllowed,
    RefundAboveLeft,
    RefundSelfApprovalRefused,
)
from billing.models import REFUND_TRANSITIONS, ChargeIssue, Refund, RefundEvent
from payments import attempts, gateway, webhooks
from payments.models import ChargeAttempt, OutboundEvent
from spaces.models import Space
from spaces.roles import APPROVER, CLERK
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db
State = Refund.State


def refunds_at_provider(localstripe, issue) -> list[dict]:
    """Every Refund localstripe holds for this issue's PaymentIntent."""
    intent = issue.attempt.provider_payment_intent_id
    return [r for r in localstripe.list("refunds") if r.get("payment_intent") == intent]


def charge(issue, clerk, approver, amount="49.90"):
    services.charge_amount_enter(
        issue=issue,
        acting_user=clerk,
        amount=amount,
        currency="EUR",
        notification_subject="Order 7",
        notification_body="We will charge your card.",
    )
    services.charge_issue_approve(issue=issue, acting_user=approver)


@pytest.fixture
def succeeded_issue(space, clerk, approver, register_card, django_capture_on_commit_callbacks):
    """A charge of 49.90 EUR that succeeded at localstripe."""
    register_card(space, email="kim@example.test")
    issue = ChargeIssue.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        charge(issue, clerk, approver)
    issue.refresh_from_db()
    assert issue.state == ChargeIssue.State.SUCCEEDED
    mail.outbox.clear()
    return issue


@pytest.fixture
def webhook_space(space):
    # Delivery is refused (loopback is not public): the outbox row is what these tests check.
    Space.objects.filter(pk=space.pk).update(webhook_url="http://127.0.0.1:9/events")
    return space


def request(issue, clerk, amount="10.00", reason="Damaged item"):
    return refunds.refund_request(issue=issue, acting_user=clerk, amount=amount, reason=reason)


def events_of(refund):
    return list(refund.events.values_list("action", "actor__username", "from_state", "to_state"))


# --- State machine ----------------------------------------------------------------------------


def test_every_refund_state_has_a_declared_transition_row():
    assert set(REFUND_TRANSITIONS) == set(State.values)


def test_a_partial_refund_above_the_threshold_waits_for_an_approver_and_is_made_once(
    succeeded_issue,
    clerk,
    approver,
    webhook_space,
    localstripe,
    django_capture_on_commit_callbacks,
):
    refund = request(succeeded_issue, clerk)
    assert refund.state == State.AWAITING_APPROVAL
    assert refunds_at_provider(localstripe, succeeded_issue) == []

    with django_capture_on_commit_callbacks(execute=True):
        refunds.refund_approve(refund=refund, acting_user=approver, comment="ok")

    refund.refresh_from_db()
    succeeded_issue.refresh_from_db()
    assert refund.state == State.SUCCEEDED
    assert succeeded_issue.state == ChargeIssue.State.SUCCEEDED
    assert succeeded_issue.refunded_minor == 1000
    assert succeeded_issue.refunded_display == "10.00 EUR (partially)"
    [at_provider] = refunds_at_provider(localstripe, succeeded_issue)
    assert at_provider["amount"] == 1000 and at_provider["status"] == "succeeded"
    assert refund.provider_refund_id == at_provider["id"] == refund.attempt.provider_refund_id
    assert refund.attempt.purpose == ChargeAttempt.Purpose.REFUND
    assert refund.attempt.idempotency_key == f"refund-{refund.pk}"
    assert events_of(refund) == [
        ("requested", "clerk1", "", "requested"),
        ("approval_required", "clerk1", "requested", "awaiting_approval"),
        ("approved", "approver1", "awaiting_approval", "approved"),
        ("refund_started", None, "approved", "refunding"),
        ("refund_succeeded", None, "refunding", "succeeded"),
    ]
    # The customer's email and the space's outbound event.
    [email] = mail.outbox
    assert email.to == ["kim@example.test"]
    assert email.subject == "Shop: refund of €10.00"
    assert "€10.00" in email.body and "€49.90" in email.body and "4242" in email.body
    [event] = OutboundEvent.objects.filter(type="charge_issue.refunded")
    assert event.payload["data"]["refunded_minor"] == 1000
    assert event.payload["data"]["refund"] == {"id": refund.pk, "amount_minor": 1000}
    assert event.payload["data"]["fully_refunded"] is False


def test_at_or_below_the_threshold_a_full_refund_is_made_at_once(
    succeeded_issue, clerk, localstripe, django_capture_on_commit_callbacks
):
    Space.objects.filter(pk=succeeded_issue.space_id).update(refund_threshold_minor=4990)
    succeeded_issue.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        refund = request(succeeded_issue, clerk, amount="49.90")

    refund.refresh_from_db()
    succeeded_issue.refresh_from_db()
    assert refund.state == State.SUCCEEDED and refund.approved_by is None
    assert succeeded_issue.refunded_minor == 4990
    assert succeeded_issue.refunded_display == "49.90 EUR (in full)"
    assert [r["amount"] for r in refunds_at_provider(localstripe, succeeded_issue)] == [4990]
    approval = refund.events.get(action="approved_by_threshold")
    assert approval.actor is None and approval.detail["threshold_minor"] == 4990
    assert "49.90 EUR" in approval.comment
    assert [m.subject for m in mail.outbox] == ["Shop: refund of €49.90"]

    # Nothing is left: even a cent more is refused, and nothing changes.
    with pytest.raises(RefundAboveLeft):
        request(succeeded_issue, clerk, amount="0.01")
    assert Refund.objects.count() == 1


def test_above_the_threshold_or_in_another_currency_needs_approval(space):
    space.refund_threshold_minor = 1000
    assert refunds.refund_threshold_allows(space=space, amount_minor=1000, currency="EUR")
    assert not refunds.refund_threshold_allows(space=space, amount_minor=1001, currency="EUR")
    assert not refunds.refund_threshold_allows(space=space, amount_minor=500, currency="USD")
    space.refund_threshold_minor = 0
    assert not refunds.refund_threshold_allows(space=space, amount_minor=1, currency="EUR")


def test_a_refund_above_what_is_left_counting_pending_ones_is_refused(succeeded_issue, clerk):
    request(succeeded_issue, clerk, amount="30.00")  # awaiting approval: holds its part

    with pytest.raises(RefundAboveLeft) as refused:
        request(succeeded_issue, clerk, amount="20.00")

    assert refused.value.field == "amount"
    assert "19.90 EUR" in refused.value.message
    assert Refund.objects.count() == 1
    assert request(succeeded_issue, clerk, amount="19.90").state == State.AWAITING_APPROVAL


def test_a_rejected_refund_frees_its_amount(succeeded_issue, clerk, approver, localstripe):
    refund = request(succeeded_issue, clerk, amount="49.90")

    with pytest.raises(InvalidInput):
        refunds.refund_reject(refund=refund, acting_user=approver, comment=" ")
    refunds.refund_reject(refund=refund, acting_user=approver, comment="Not agreed")

    refund.refresh_from_db()
    assert refund.state == State.REJECTED
    assert refund.events.get(action="rejected").comment == "Not agreed"
    assert refunds_at_provider(localstripe, succeeded_issue) == []
    assert request(succeeded_issue, clerk, amount="49.90").state == State.AWAITING_APPROVAL
    # A decided refund cannot be decided again.
    with pytest.raises(IllegalTransition):
        refunds.refund_approve(refund=refund, acting_user=approver)


@pytest.mark.parametrize(
    ("amount", "reason", "error"),
    [
        ("abc", "Damaged", InvalidAmount),
        ("0", "Damaged", InvalidAmount),
        ("-5", "Damaged", InvalidAmount),
        ("1.234", "Damaged", InvalidAmount),
        ("10.00", "   ", InvalidInput),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(succeeded_issue, clerk, amount, reason, error):
    with pytest.raises(error):
        request(succeeded_issue, clerk, amount=amount, reason=reason)
    assert Refund.objects.count() == 0 and RefundEvent.objects.count() == 0


def test_the_database_refuses_a_refund_in_another_space_than_its_charge(succeeded_issue, clerk):
    refund = request(succeeded_issue, clerk)
    other = SpaceFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        Refund.objects.filter(pk=refund.pk).update(space=other)
    with pytest.raises(IntegrityError), transaction.atomic():
        ChargeIssue.objects.filter(pk=succeeded_issue.pk).update(refunded_minor=5000)


def test_only_a_succeeded_charge_can_be_refunded(space, clerk, register_card):
    register_card(space)
    with pytest.raises(IllegalTransition):
        request(ChargeIssue.objects.get(), clerk)
    assert Refund.objects.count() == 0


def test_an_approver_cannot_request_and_staff_of_another_space_cannot_act(
    succeeded_issue, clerk, approver
):
    with pytest.raises(NotAllowed):
        request(succeeded_issue, approver)
    refund = request(succeeded_issue, clerk)
    stranger = StaffUserFactory(username="other1", role=APPROVER, spaces=[SpaceFactory()])

    with pytest.raises(NotAllowed) as not_found:
        refunds.refund_approve(refund=refund, acting_user=stranger)
    with pytest.raises(NotAllowed):
        refunds.refund_approve(refund=refund, acting_user=clerk)

    refund.refresh_from_db()
    assert refund.state == State.AWAITING_APPROVAL
    # The stranger's refund does not exist for them, and their try is no part of its history.
    assert not_found.value.code == "not_found"
    refused = refund.events.filter(action="approval_refused")
    assert list(refused.values_list("actor__username", "detail__reason")) == [
        ("clerk1", "wrong_role"),
    ]


def test_the_requester_can_never_approve_their_own_refund_and_the_try_is_audited(
    succeeded_issue, space, approver
):
    both = StaffUserFactory(username="both1", role=CLERK, spaces=[space])
    both.groups.add(Group.objects.get(name=APPROVER))
    refund = request(succeeded_issue, both)

    with pytest.raises(RefundSelfApprovalRefused):
        refunds.refund_approve(refund=refund, acting_user=both)

    refund.refresh_from_db()
    assert refund.state == State.AWAITING_APPROVAL and refund.approved_by is None
    refusal = refund.events.get(action="approval_refused")
    assert refusal.actor == both and refusal.detail == {"reason": "refund_self_approval"}
    assert refunds.refund_approve(refund=refund, acting_user=approver).state == State.APPROVED


# --- Exactly once -----------------------------------------------------------------------------


def test_the_refund_task_delivered_twice_refunds_once(
    succeeded_issue, clerk, approver, localstripe
):
    refund = request(succeeded_issue, clerk)
    refunds.refund_approve(refund=refund, acting_user=approver)  # on-commit task not run

    assert tasks.refund_execute(refund.pk) is True
    assert tasks.refund_execute(refund.pk) is False
    assert refunds.refunds_due_dispatch() == 0

    refund.refresh_from_db()
    assert refund.state == State.SUCCEEDED
    assert len(refunds_at_provider(localstripe, succeeded_issue)) == 1
    assert ChargeAttempt.objects.filter(refund=refund).count() == 1


@pytest.mark.django_db(transaction=True)
def test_four_workers_racing_on_one_refund_refund_once(localstripe):
    space = SpaceFactory()
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    approver = StaffUserFactory(role=APPROVER, spaces=[space])
    customer = CustomerFactory(space=space)
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
    charge(issue, clerk, approver)  # the eager on-commit task charges it
    issue.refresh_from_db()
    assert issue.state == ChargeIssue.State.SUCCEEDED
    refund = request(issue, clerk, amount="5.00")
    # Approved without its on-commit task, so the four workers below race for it.
    Refund.objects.filter(pk=refund.pk).update(state=State.APPROVED)

    barrier = threading.Barrier(4)
    outcomes, errors = [], []

    def worker():
        try:
            barrier.wait()
            outcomes.append(refunds.refund_execute(refund_id=refund.pk) is not None)
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
    assert Refund.objects.get(pk=refund.pk).state == State.SUCCEEDED
    assert len(refunds_at_provider(localstripe, issue)) == 1
    assert ChargeIssue.objects.get(pk=issue.pk).refunded_minor == 500


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_never_exceed_the_charge(succeeded_issue, clerk):
    barrier = threading.Barrier(3)
    outcomes = []

    def worker():
        try:
            barrier.wait()
            request(ChargeIssue.objects.get(pk=succeeded_issue.pk), clerk, amount="20.00")
            outcomes.append("requested")
        except RefundAboveLeft:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["refused", "requested", "requested"]
    assert Refund.objects.filter(issue=succeeded_issue).count() == 2


def test_an_unknown_outcome_is_reconciled_before_any_new_call(
    succeeded_issue, clerk, approver, localstripe
):
    refund = request(succeeded_issue, clerk)
    refunds.refund_approve(refund=refund, acting_user=approver)

    def unreachable(**kwargs):
        raise stripe.APIConnectionError("injected: connection refused")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gateway, "refund_create", unreachable)
        refunds.refund_execute(refund_id=refund.pk)

    attempt = ChargeAttempt.objects.get(refund=refund)
    assert attempt.status == ChargeAttempt.Status.UNKNOWN
    assert Refund.objects.get(pk=refund.pk).state == State.REFUNDING
    assert refunds_at_provider(localstripe, succeeded_issue) == []
    # Nothing calls again while the outcome is unknown: not the task, not a young reconcile.
    assert refunds.refund_execute(refund_id=refund.pk) is None
    assert attempts.attempts_reconcile() == 0

    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 1

    refund.refresh_from_db()
    assert refund.state == State.SUCCEEDED
    assert len(refunds_at_provider(localstripe, succeeded_issue)) == 1


def test_a_crash_after_the_provider_refunded_is_reconciled_without_a_second_refund(
    succeeded_issue, clerk, approver, localstripe, monkeypatch
):
    refund = request(succeeded_issue, clerk)
    refunds.refund_approve(refund=refund, acting_user=approver)
    real_record = attempts.attempt_record

    def crash(**kwargs):
        # Fault injection: the worker dies after the provider refunded, before our commit.
        raise SystemExit("worker killed")

    monkeypatch.setattr(attempts, "attempt_record", crash)
    with pytest.raises(SystemExit):
        refunds.refund_execute(refund_id=refund.pk)
    monkeypatch.setattr(attempts, "attempt_record", real_record)
    assert ChargeAttempt.objects.get(refund=refund).status == ChargeAttempt.Status.PENDING
    assert len(refunds_at_provider(localstripe, succeeded_issue)) == 1

    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 1

    refund.refresh_from_db()
    succeeded_issue.refresh_from_db()
    assert refund.state == State.SUCCEEDED and succeeded_issue.refunded_minor == 1000
    assert len(refunds_at_provider(localstripe, succeeded_issue)) == 1
    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 0


def test_a_charge_refunded_provider_event_settles_the_refund(
    succeeded_issue, clerk, approver, localstripe, monkeypatch, django_capture_on_commit_callbacks
):
    refund = request(succeeded_issue, clerk)
    refunds.refund_approve(refund=refund, acting_user=approver)
    real_record = attempts.attempt_record
    monkeypatch.setattr(attempts, "attempt_record", lambda **kwargs: None)
    refunds.refund_execute(refund_id=refund.pk)  # the provider refunded; nothing recorded
    monkeypatch.setattr(attempts, "attempt_record", real_record)
    charge_id = succeeded_issue.attempt.provider_charge_id
    charge_obj = requests.get(
        f"{localstripe.url}/v1/charges/{charge_id}",
        auth=(settings.STRIPE_SECRET_KEY, ""),
        timeout=10,
    ).json()
    assert charge_obj["refunds"]["data"], "localstripe lists the charge's refunds"

    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks.provider_event_receive(
            event={"id": "evt_refund_1", "type": "charge.refunded", "data": {"object": charge_obj}}
        )

    refund.refresh_from_db()
    assert refund.state == State.SUCCEEDED
    assert refund.attempt.status == ChargeAttempt.Status.SUCCEEDED
    assert len(refunds_at_provider(localstripe, succeeded_issue)) == 1


def test_a_refund_the_provider_refuses_fails_with_its_reason_and_frees_the_amount(
    succeeded_issue, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    refund = request(succeeded_issue, clerk, amount="49.90")
    # The provider knows no such PaymentIntent (as after a mix-up of accounts): a real refusal.
    Refund.objects.filter(pk=refund.pk).update(provider_payment_intent_id="pi_unknown")

    with django_capture_on_commit_callbacks(execute=True):
        refunds.refund_approve(refund=refund, acting_user=approver)

    refund.refresh_from_db()
    succeeded_issue.refresh_from_db()
    assert refund.state == State.FAILED
    # Stripe says resource_missing; localstripe gives no code, so ours names the refusal.
    assert refund.failure_code in {"resource_missing", "refund_refused"}
    assert refund.failure_message
    assert refund.attempt.status == ChargeAttempt.Status.FAILED
    assert refund.events.get(action="refund_failed").from_state == State.REFUNDING
    assert succeeded_issue.refunded_minor == 0
    assert mail.outbox == [] and not OutboundEvent.objects.filter(type="charge_issue.refunded")
    assert refunds_at_provider(localstripe, succeeded_issue) == []
    assert request(succeeded_issue, clerk, amount="49.90").state == State.AWAITING_APPROVAL


def test_an_illegal_refund_transition_is_refused_and_changes_nothing(succeeded_issue, clerk):
    refund = request(succeeded_issue, clerk)
    events = RefundEvent.objects.count()

    for to_state in (State.SUCCEEDED, State.REFUNDING, State.FAILED):
        with pytest.raises(IllegalTransition):
            refunds._transition(refund, to_state, actor=clerk, action="forced")

    refund.refresh_from_db()
    assert refund.state == State.AWAITING_APPROVAL
    assert RefundEvent.objects.count() == events


def test_a_refund_provider_event_settles_the_refund(
    succeeded_issue, clerk, approver, localstripe, monkeypatch, django_capture_on_commit_callbacks
):
    refund = request(succeeded_issue, clerk)
    refunds.refund_approve(refund=refund, acting_user=approver)
    real_record = attempts.attempt_record
    monkeypatch.setattr(attempts, "attempt_record", lambda **kwargs: None)
    refunds.refund_execute(refund_id=refund.pk)
    monkeypatch.setattr(attempts, "attempt_record", real_record)
    [at_provider] = refunds_at_provider(localstripe, succeeded_issue)

    with django_capture_on_commit_callbacks(execute=True):
        webhooks.provider_event_receive(
            event={"id": "evt_refund_2", "type": "refund.updated", "data": {"object": at_provider}}
        )

    refund.refresh_from_db()
    assert refund.state == State.SUCCEEDED and refund.provider_refund_id == at_provider["id"]
    assert [m.subject for m in mail.outbox] == ["Shop: refund of €10.00"]
