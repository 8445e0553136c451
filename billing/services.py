"""Charging issues: start, 1. charge amount entry, approval, exactly-once charge, 1r. restart."""

import logging
from contextlib import contextmanager
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from cards.models import CardEvent, Customer, PaymentCard
from core import money
from core.logging import log_context_bind
from core.tasks import dispatch, dispatch_due
from payments import attempts, outbox
from payments.models import ChargeAttempt
from spaces.selectors import user_may_act_in_space, user_works_in_space

from . import charging
from .charging import ISSUE_CHARGE
from .exceptions import (
    IllegalTransition,
    InvalidAmount,
    InvalidInput,
    NoChargeableCard,
    NotAllowed,
    NotFound,
    ReferenceInUse,
    SelfApprovalRefused,
    SpaceMismatch,
)
from .models import FINISHED_STATES, TRANSITIONS, ChargeIssue, ChargeIssueEvent
from .selectors import charge_issue_due_q
from .signals import collection_started

logger = logging.getLogger(__name__)
State = ChargeIssue.State

# 1. charge amount entry refuses a charge date further ahead than this (366 days, so the same
# date next year is fine across a leap day).
MAX_CHARGE_DATE_AHEAD = timedelta(days=366)
# 1r. restart: a second request for the same finished issue this soon is the same request.
RESTART_REPEAT_WINDOW = timedelta(minutes=2)
OPEN_REFERENCE_CONSTRAINT = "issue_open_reference_unique"


# --- State machine ----------------------------------------------------------------------------


def _transition(issue, to_state, *, actor, action, comment="", detail=None) -> ChargeIssueEvent:
    """Move an issue along TRANSITIONS and write the audit event in the same transaction."""
    if to_state not in TRANSITIONS[issue.state]:
        raise IllegalTransition(
            f"This charge is at “{issue.get_state_display()}”: that step is not possible now."
        )
    from_state = issue.state
    issue.state = to_state
    issue.save()
    return _audit(issue, actor=actor, action=action, from_state=from_state, comment=comment,
                  detail=detail)  # fmt: skip


def _audit(issue, *, actor, action, from_state="", comment="", detail=None):
    return ChargeIssueEvent.objects.create(
        issue=issue,
        actor=actor,
        action=action,
        from_state=from_state,
        to_state=issue.state,
        comment=comment,
        detail=detail or {},
    )


def _locked(issue: ChargeIssue) -> ChargeIssue:
    return ChargeIssue.objects.select_for_update(of=("self",)).get(pk=issue.pk)


def _require(user, permission: str, issue: ChargeIssue) -> None:
    if not user_may_act_in_space(user=user, permission=permission, space_id=issue.space_id):
        raise NotAllowed()


# --- Start ------------------------------------------------------------------------------------


def _chargeable_card(customer: Customer, preferred: PaymentCard | None = None) -> PaymentCard:
    if preferred is not None and (
        preferred.customer_id != customer.pk or preferred.space_id != customer.space_id
    ):
        raise SpaceMismatch(code="card_other_customer")
    if preferred is not None and preferred.status == PaymentCard.Status.ACTIVE:
        return preferred
    card = customer.cards.filter(status=PaymentCard.Status.ACTIVE).order_by("-is_default").first()
    if card is None:
        raise NoChargeableCard()
    return card


@contextmanager
def _reference_kept(space_id: int, reference: str):
    """Turns a start refused by the reference's unique index (models:
    issue_open_reference_unique) into ReferenceInUse naming the unfinished issue that has the
    reference; the index makes two concurrent starts with one reference unable to both commit
    (the second insert waits on the first's index entry, then fails)."""
    try:
        yield
    except IntegrityError as exc:
        if OPEN_REFERENCE_CONSTRAINT not in str(exc):
            raise
        existing = (
            ChargeIssue.objects.filter(space_id=space_id, external_reference=reference)
            .exclude(state__in=FINISHED_STATES)
            .values_list("pk", flat=True)
            .first()
        )
        if existing is None:  # it finished meanwhile: the start may simply be retried
            raise
        raise ReferenceInUse(existing) from None


def charge_issue_start(
    *,
    customer: Customer,
    source: str,
    acting_user=None,
    card: PaymentCard | None = None,
    started_by_event: CardEvent | None = None,
    restarted_from: ChargeIssue | None = None,
    external_reference: str = "",
    currency: str = "",
    notification_subject: str = "",
    notification_body: str = "",
    amount_minor: int | None = None,
    detail: dict | None = None,
) -> ChargeIssue:
    """Start an issue at "1. charge amount entry" with the customer's data inherited (name,
    email, provider customer id, last 4), so the clerk enters only what is new.

    The issue is in the customer's space; a card of another customer or space, or a start
    event or past issue of another customer, is refused (SpaceMismatch), and PostgreSQL's
    composite foreign keys refuse such a row too."""
    for origin in (started_by_event, restarted_from):
        if origin is not None and origin.customer_id != customer.pk:
            raise SpaceMismatch(
                "This charge can only be started for the customer it came from.",
                code="origin_other_customer",
            )
    card = _chargeable_card(customer, card)
    with _reference_kept(customer.space_id, external_reference), transaction.atomic():
        issue = ChargeIssue.objects.create(
            space_id=customer.space_id,
            customer=customer,
            card=card,
            source=source,
            started_by_event=started_by_event,
            restarted_from=restarted_from,
            external_reference=external_reference,
            customer_name=customer.name,
            customer_email=customer.email,
            provider_customer_id=customer.provider_customer_id or "",
            card_last4=card.last4,
            currency=(currency or customer.space.default_currency).upper(),
            notification_subject=notification_subject,
            notification_body=notification_body,
            amount_minor=amount_minor,
        )
        _audit(
            issue, actor=acting_user, action="started", detail={"source": source, **(detail or {})}
        )
    return issue


def charge_issue_start_by_staff(*, customer: Customer, acting_user) -> ChargeIssue:
    """A clerk starts a charge for a customer with a card on file (like a 1r. without history)."""
    if not user_may_act_in_space(
        user=acting_user, permission="billing.add_chargeissue", space_id=customer.space_id
    ):
        raise NotAllowed()
    return charge_issue_start(
        customer=customer, source=ChargeIssue.Source.STAFF, acting_user=acting_user
    )


def charge_issue_start_from_card_event(*, event: CardEvent) -> ChargeIssue | None:
    """The "message start event": a registered card starts an issue, once per event."""
    if ChargeIssue.objects.filter(started_by_event=event).exists():
        return None
    return charge_issue_start(
        customer=event.customer,
        card=event.card,
        source=ChargeIssue.Source.CARD_REGISTERED,
        started_by_event=event,
        detail={"card_event": event.pk},
    )


def charge_issue_restart(*, issue: ChargeIssue, acting_user) -> ChargeIssue:
    """1r.: a new issue at "charge amount entry" with this finished one's data copied; the
    old one is not changed. The charge date is not copied: a past date would charge at once.

    A repeat within RESTART_REPEAT_WINDOW (a double click, a resent form) returns the issue the
    first one started, as long as nobody has entered its amount yet: the finished issue's row
    is locked first, so two requests at once cannot both start one."""
    _require(acting_user, "billing.enter_amount", issue)
    if not issue.is_finished:
        raise IllegalTransition("Only a finished charge can be started again with its data.")
    with transaction.atomic():
        _locked(issue)
        recent = (
            ChargeIssue.objects.filter(
                restarted_from=issue,
                source=ChargeIssue.Source.RESTART,
                state=State.AWAITING_AMOUNT,
                created_at__gte=timezone.now() - RESTART_REPEAT_WINDOW,
            )
            .order_by("-created_at", "-pk")
            .first()
        )
        if recent is not None:
            return recent
        return _restart_start(issue, acting_user)


def _restart_start(issue: ChargeIssue, acting_user) -> ChargeIssue:
    return charge_issue_start(
        customer=issue.customer,
        card=issue.card,
        source=ChargeIssue.Source.RESTART,
        acting_user=acting_user,
        restarted_from=issue,
        external_reference=issue.external_reference,
        currency=issue.currency,
        notification_subject=issue.notification_subject,
        notification_body=issue.notification_body,
        amount_minor=issue.amount_minor,
        detail={"restarted_from": issue.pk},
    )


def charge_issue_start_recurring(
    *,
    customer: Customer,
    card: PaymentCard,
    amount_minor: int,
    currency: str,
    reference: str = "",
    notification_subject: str = "",
    notification_body: str = "",
    approval_rule: dict | None = None,
    detail: dict | None = None,
) -> ChargeIssue:
    """A recurring generation's charge: started with its amount already entered (by the line,
    not a person, so entered_by stays empty) and waiting for approval.

    `approval_rule` is the space's "approved by rule up to" setting ({"up_to_minor",
    "currency", "set_by", "set_by_id", "set_at"}): an amount within it is approved by that rule
    at once, the audit event naming the rule and who set it; anything above waits for an
    approver (the four-eyes rule: nobody entered it, so any approver may). The amount must lie
    between the provider's minimum and the space's maximum, like every other charge."""
    try:
        money.check_amount(amount_minor, currency, maximum=customer.space.max_charge_for(currency))
    except money.MoneyError as exc:
        raise InvalidAmount(str(exc), field="amount") from exc
    with transaction.atomic():
        issue = charge_issue_start(
            customer=customer,
            card=card,
            source=ChargeIssue.Source.RECURRING,
            external_reference=reference,
            currency=currency,
            notification_subject=notification_subject,
            notification_body=notification_body,
            amount_minor=amount_minor,
            detail=detail,
        )
        issue = _locked(issue)
        issue.entered_at = timezone.now()
        _transition(
            issue,
            State.AWAITING_APPROVAL,
            actor=None,
            action="amount_entered",
            detail={"amount_minor": amount_minor, "currency": issue.currency, "by": "recurring"},
        )
        rule = approval_rule or {}
        if (
            rule.get("up_to_minor", 0) > 0
            and rule.get("currency", "").upper() == issue.currency
            and amount_minor <= rule["up_to_minor"]
        ):
            issue.approved_at = timezone.now()
            _transition(
                issue,
                State.APPROVED,
                actor=None,
                action="approved_by_rule",
                comment=(
                    f"Approved by rule: recurring charges up to {rule['up_to_minor']} "
                    f"{rule['currency']} (minor units), set by {rule.get('set_by') or 'unknown'}."
                ),
                detail={"rule": "recurring_auto_approve_up_to", **rule},
            )
            issue_id = issue.pk
            transaction.on_commit(lambda: _after_approval(issue_id))
    return issue


# --- Human steps ------------------------------------------------------------------------------


def charge_amount_enter(
    *,
    issue: ChargeIssue,
    acting_user,
    amount,
    currency: str,
    notification_subject: str,
    notification_body: str,
    charge_date=None,
) -> ChargeIssue:
    """1. Charge amount entry: amount (decimal text in the currency's units, see
    money.to_minor), wording, date. The amount lies between the provider's minimum for the
    currency and the space's maximum; the charge date, if any, within the next year."""
    _require(acting_user, "billing.enter_amount", issue)
    try:
        minor = money.to_minor(amount, currency)
        money.check_amount(minor, currency, maximum=issue.space.max_charge_for(currency))
    except money.MoneyError as exc:
        raise InvalidAmount(str(exc), field="amount") from exc
    if charge_date is not None and charge_date < timezone.now():
        # A past date would charge the moment it is approved; say so instead of surprising.
        raise InvalidInput(
            "The charge date is in the past. Leave it empty to charge as soon as it is approved.",
            field="charge_date",
        )
    if charge_date is not None and charge_date > timezone.now() + MAX_CHARGE_DATE_AHEAD:
        # Almost always a typo in the year; a card may well have expired by then anyway.
        raise InvalidInput(
            "The charge date is more than a year ahead. Enter a date within the next year.",
            field="charge_date",
        )
    with transaction.atomic():
        issue = _locked(issue)
        issue.amount_minor = minor
        issue.currency = currency.upper()
        issue.notification_subject = notification_subject
        issue.notification_body = notification_body
        issue.charge_date = charge_date
        issue.entered_by = acting_user
        issue.entered_at = timezone.now()
        issue.approved_by = None
        issue.approved_at = None
        _transition(
            issue,
            State.AWAITING_APPROVAL,
            actor=acting_user,
            action="amount_entered",
            detail={
                "amount_minor": minor,
                "currency": issue.currency,
                "charge_date": charge_date.isoformat() if charge_date else None,
            },
        )
    return issue


def charge_issue_approval_refusal_record(*, issue_id: int, acting_user, code: str) -> None:
    """Audit a refused approval (wrong role, self-approval) on the issue. Only for a user of
    the issue's space: staff of another space never find it, and their tries are no part of
    its history.

    Written in its own transaction (a savepoint inside a caller's), so the row survives the
    error the caller raises next, as long as the caller does not roll its own back."""
    comments = {
        "wrong_role": "Approval refused: the user's role may not approve charges.",
        "self_approval": "The user who entered the amount tried to approve it.",
    }
    with transaction.atomic():
        issue = ChargeIssue.objects.select_for_update(of=("self",)).get(pk=issue_id)
        _audit(
            issue,
            actor=acting_user if getattr(acting_user, "pk", None) else None,
            action="approval_refused",
            comment=comments.get(code, "Approval refused."),
            detail={"reason": code},
        )
    logger.info(
        "approval of issue %s refused for user %s: %s",
        issue_id,
        getattr(acting_user, "pk", None),
        code,
    )


def charge_issue_approve(*, issue: ChargeIssue, acting_user, comment: str = "") -> ChargeIssue:
    """The four-eyes check: someone other than the person who entered the amount approves.
    A comment the approver types is kept on the approval's audit event.

    A refusal by a user of the issue's space (wrong role, self-approval) is audited on the
    issue; for anyone else the issue is not found (NotFound), and nothing is written."""
    permission = "billing.approve_charge"
    if not user_works_in_space(user=acting_user, space_id=issue.space_id):
        logger.info(
            "approval of issue %s refused for user %s: not in their spaces",
            issue.pk,
            getattr(acting_user, "pk", None),
        )
        raise NotFound()
    if not acting_user.has_perm(permission):
        charge_issue_approval_refusal_record(
            issue_id=issue.pk, acting_user=acting_user, code="wrong_role"
        )
        raise NotAllowed()
    if issue.entered_by_id is not None and issue.entered_by_id == acting_user.pk:
        charge_issue_approval_refusal_record(
            issue_id=issue.pk, acting_user=acting_user, code=SelfApprovalRefused.code
        )
        raise SelfApprovalRefused()
    with transaction.atomic():
        issue = _locked(issue)
        if issue.entered_by_id == acting_user.pk:
            raise SelfApprovalRefused()
        issue.approved_by = acting_user
        issue.approved_at = timezone.now()
        _transition(
            issue, State.APPROVED, actor=acting_user, action="approved", comment=comment.strip()
        )
        issue_id = issue.pk
        transaction.on_commit(lambda: _after_approval(issue_id))
    return issue


def charge_issue_return(*, issue: ChargeIssue, acting_user, comment: str) -> ChargeIssue:
    _require(acting_user, "billing.approve_charge", issue)
    if not comment.strip():
        raise InvalidInput("Say what needs changing when you return a charge.", field="comment")
    with transaction.atomic():
        issue = _locked(issue)
        _transition(issue, State.RETURNED, actor=acting_user, action="returned", comment=comment)
    return issue


def charge_issue_cancel(
    *, issue: ChargeIssue, acting_user=None, comment: str = "", via: dict | None = None
) -> ChargeIssue:
    """Cancel an issue before its charge is made. Staff need a clerk's or approver's
    permission in the issue's space; another system cancels `via` its API key (named in the
    audit event; the API reaches only its key's space's issues)."""
    if via is None and not (
        acting_user is not None
        and (
            acting_user.has_perm("billing.enter_amount")
            or acting_user.has_perm("billing.approve_charge")
        )
    ):
        raise NotAllowed()
    if via is None:
        _require(acting_user, "billing.view_chargeissue", issue)
    with transaction.atomic():
        issue = _locked(issue)
        if issue.state == State.COLLECTING:
            # Its charge flow may be charging right now: the collection is cancelled on its
            # case page, which ends the issue with it.
            raise IllegalTransition(
                "This charge is being collected: cancel the collection on its case page."
            )
        _transition(issue, State.CANCELLED, actor=acting_user, action="cancelled", comment=comment,
                    detail=via)  # fmt: skip
    return issue


def charge_issue_send_to_collection(*, issue: ChargeIssue, acting_user) -> ChargeIssue:
    """Staff send an approved issue straight to collection (no usable card, say): a charge
    flow collects the approved amount, unchanged."""
    _require(acting_user, "billing.approve_charge", issue)
    with transaction.atomic():
        issue = _locked(issue)
        _transition(issue, State.COLLECTING, actor=acting_user, action="sent_to_collection")
        issue_id = issue.pk
        transaction.on_commit(
            lambda: collection_started.send(sender=ChargeIssue, issue_id=issue_id)
        )
    return issue


def charge_issue_collection_finish(
    *, issue_id: int, to_state: str, acting_user=None, detail: dict | None = None
) -> list | None:
    """The end of a collection (succeeded, failed, cancelled), written by its charge flow in
    the caller's transaction with the audit event and the space's charge_issue.<state>
    outbound event. Returns the outbound event ids (the caller dispatches them and sends the
    outcome emails on commit); None if the issue is no longer collecting."""
    issue = (
        ChargeIssue.objects.select_for_update(of=("self",))
        .select_related("space", "customer")
        .get(pk=issue_id)
    )
    if issue.state != State.COLLECTING:
        return None
    _transition(
        issue,
        to_state,
        actor=acting_user,
        action=f"collection_{to_state}",
        detail=detail,
    )
    if not issue.space.webhook_url:
        return []
    customer = issue.customer
    event = outbox.outbound_event_create(
        space=issue.space,
        type=f"charge_issue.{issue.state}",
        payload=charging.outbound_payload(
            issue=issue,
            customer_ref=customer.external_number or f"id:{customer.pk}",
            created=int(timezone.now().timestamp()),
        ),
    )
    return [event.pk]


def _after_approval(issue_id: int) -> None:
    from .tasks import charge_issue_charge, charge_issue_notification_email

    # On commit of the approval: a broker outage is logged, not shown to the approver; the
    # charge is then sent by the next charge_issues_due_dispatch (the email has no sweeper).
    dispatch(charge_issue_notification_email, issue_id)
    due = ChargeIssue.objects.filter(charge_issue_due_q(timezone.now()), pk=issue_id)
    if due.exists():
        dispatch(charge_issue_charge, issue_id, mark=ChargeIssue.objects.filter(pk=issue_id))


# --- Charging (exactly once, through payments' one money path) ------------------------------


def charge_issue_charge(*, issue_id: int) -> ChargeAttempt | None:
    """Charge an approved, due issue at most once, whoever else runs this concurrently.

    payments.attempts does it (begin: lock the issue, skipping it if another worker holds it,
    move it to charging and commit the attempt; execute: one provider call; record); the
    issue's part is billing.charging.IssueCharge. The outcome reaches billing through
    payments.signals.attempt_settled (billing/receivers.py). None if nothing was charged.
    """
    log_context_bind(issue=issue_id)
    return attempts.attempt_charge(owner=ISSUE_CHARGE, owner_id=issue_id)


def charge_issues_due_dispatch() -> int:
    """Beat: send charge tasks for approved issues whose date has come and that have no
    message queued (also re-sends what the broker lost; the charge itself is exactly-once)."""
    from .tasks import charge_issue_charge

    due = ChargeIssue.objects.filter(charge_issue_due_q(timezone.now()))
    return dispatch_due(charge_issue_charge, due, limit=1000)


def charge_issue_outcome_emails_dispatch(*, issue_id: int, succeeded: bool) -> None:
    """After an outcome is committed: the customer's email, and for a failure the staff's,
    each its own task (so one failing never re-sends the other, nor the webhook)."""
    from . import tasks

    dispatch(tasks.charge_issue_customer_outcome_email, issue_id)
    if not succeeded:
        dispatch(tasks.charge_issue_staff_failure_email, issue_id)
