"""Charging issues: start, 1. charge amount entry, approval, exactly-once charge, 1r. restart."""

import logging
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from cards.models import CardEvent, Customer, PaymentCard
from payments import gateway
from spaces.selectors import user_may_act_in_space

from . import charging_sql, money
from .exceptions import (
    IllegalTransition,
    InvalidAmount,
    InvalidInput,
    NoChargeableCard,
    NotAllowed,
    SelfApprovalRefused,
    SpaceMismatch,
)
from .models import TRANSITIONS, ChargeAttempt, ChargeIssue, ChargeIssueEvent

logger = logging.getLogger(__name__)
State = ChargeIssue.State

# An attempt still pending after this long lost its worker (crash, timeout): reconcile it.
# Longer than any provider call can take, so the original call cannot still land afterwards.
RECONCILE_AFTER = timedelta(minutes=2)

# 1. charge amount entry refuses a charge date further ahead than this (366 days, so the same
# date next year is fine across a leap day).
MAX_CHARGE_DATE_AHEAD = timedelta(days=366)


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
    with transaction.atomic():
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
    old one is not changed. The charge date is not copied: a past date would charge at once."""
    _require(acting_user, "billing.enter_amount", issue)
    if not issue.is_finished:
        raise IllegalTransition("Only a finished charge can be started again with its data.")
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
    """Audit a refused approval (wrong role, another space, self-approval) on the issue.

    Written in its own transaction (a savepoint inside a caller's), so the row survives the
    error the caller raises next, as long as the caller does not roll its own back."""
    comments = {
        "wrong_role": "Approval refused: the user's role may not approve charges.",
        "other_space": "Approval refused: the user does not work in this charge's space.",
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


def charge_issue_approve(*, issue: ChargeIssue, acting_user) -> ChargeIssue:
    """The four-eyes check: someone other than the person who entered the amount approves.

    Every refusal (wrong role, another space, self-approval) is audited on the issue."""
    permission = "billing.approve_charge"
    if not user_may_act_in_space(user=acting_user, permission=permission, space_id=issue.space_id):
        reason = "other_space" if acting_user.has_perm(permission) else "wrong_role"
        charge_issue_approval_refusal_record(
            issue_id=issue.pk, acting_user=acting_user, code=reason
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
        _transition(issue, State.APPROVED, actor=acting_user, action="approved")
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


def charge_issue_cancel(*, issue: ChargeIssue, acting_user, comment: str = "") -> ChargeIssue:
    if not (
        acting_user.has_perm("billing.enter_amount")
        or acting_user.has_perm("billing.approve_charge")
    ):
        raise NotAllowed()
    _require(acting_user, "billing.view_chargeissue", issue)
    with transaction.atomic():
        issue = _locked(issue)
        _transition(issue, State.CANCELLED, actor=acting_user, action="cancelled", comment=comment)
    return issue


def _after_approval(issue_id: int) -> None:
    from .tasks import charge_issue_charge, charge_issue_notification_email

    charge_issue_notification_email.delay(issue_id)
    issue = ChargeIssue.objects.only("charge_date").get(pk=issue_id)
    if issue.charge_date is None or issue.charge_date <= timezone.now():
        charge_issue_charge.delay(issue_id)


# --- Charging (exactly once) ------------------------------------------------------------------


def charge_issue_charge(*, issue_id: int) -> ChargeAttempt | None:
    """Charge an approved, due issue at most once, whoever else runs this concurrently.

    Lock the issue (skipping it if another worker holds it), commit the attempt with its
    idempotency key, then call the provider, then record the outcome. A crash between the
    call and the record leaves the attempt pending; charge_attempts_reconcile looks the charge
    up at the provider before anything may call again.

    This is the hot path of every charge: rows are changed with conditional UPDATEs (which
    also enforce the state change in SQL) rather than loaded and saved whole.
    """
    now = timezone.now()
    if connection.vendor in SINGLE_STATEMENT_VENDORS:
        issue, attempt = _claim_single_statement(issue_id, now)
    else:
        issue, attempt = _claim_orm(issue_id, now)
    if attempt is None:
        return None
    return _charge_attempt_call(
        attempt,
        customer_id=issue["provider_customer_id"],
        payment_method_id=issue["card__provider_payment_method_id"],
        space_id=issue["space_id"],
    )


# The hot path runs as one statement per transaction where the database allows it (see
# charging_sql.py); elsewhere (SQLite in the local run) through the ORM. Tests run both.
SINGLE_STATEMENT_VENDORS = {"postgresql"}


def _claim_single_statement(issue_id: int, now):
    _check_transition(State.APPROVED, State.CHARGING)
    row = charging_sql.claim(
        issue_id=issue_id,
        from_state=State.APPROVED,
        to_state=State.CHARGING,
        action="charge_started",
        key_prefix="charge-issue-",
        now=now,
    )
    if row is None:
        return None, None
    pk, space_id, amount, currency, customer_id, method_id, attempt_id, key = row
    attempt = ChargeAttempt(
        pk=attempt_id, issue_id=pk, idempotency_key=key, amount_minor=amount, currency=currency
    )
    attempt._state.adding = False
    issue = {
        "pk": pk,
        "space_id": space_id,
        "provider_customer_id": customer_id,
        "card__provider_payment_method_id": method_id,
    }
    return issue, attempt


def _claim_orm(issue_id: int, now):
    with transaction.atomic():
        issue = (
            ChargeIssue.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk=issue_id, state=State.APPROVED)
            .filter(Q(charge_date__isnull=True) | Q(charge_date__lte=now))
            .values(
                "pk",
                "space_id",
                "amount_minor",
                "currency",
                "provider_customer_id",
                "card__provider_payment_method_id",
            )
            .first()
        )
        if issue is None:
            return None, None
        attempt = ChargeAttempt.objects.create(
            issue_id=issue["pk"],
            idempotency_key=f"charge-issue-{issue['pk']}",
            amount_minor=issue["amount_minor"],
            currency=issue["currency"],
        )
        _transition_row(
            issue["pk"],
            State.APPROVED,
            State.CHARGING,
            action="charge_started",
            detail={"attempt": attempt.pk},
        )
    return issue, attempt


def _check_transition(from_state, to_state) -> None:
    if to_state not in TRANSITIONS[from_state]:
        raise IllegalTransition(f"{from_state} -> {to_state} is not a declared transition.")


def _transition_row(issue_id, from_state, to_state, *, action, comment="", detail=None, **fields):
    """_transition for the charging path: one conditional UPDATE plus the audit INSERT."""
    _check_transition(from_state, to_state)
    updated = ChargeIssue.objects.filter(pk=issue_id, state=from_state).update(
        state=to_state, updated_at=timezone.now(), **fields
    )
    if updated != 1:
        raise IllegalTransition(f"Charge #{issue_id} is no longer {from_state}.")
    ChargeIssueEvent.objects.create(
        issue_id=issue_id,
        action=action,
        from_state=from_state,
        to_state=to_state,
        comment=comment,
        detail=detail or {},
    )


def _charge_attempt_call(
    attempt: ChargeAttempt, *, customer_id: str, payment_method_id: str, space_id: int
) -> ChargeAttempt:
    try:
        result = gateway.payment_intent_charge_off_session(
            customer_id=customer_id,
            payment_method_id=payment_method_id,
            amount_minor=attempt.amount_minor,
            currency=attempt.currency,
            idempotency_key=attempt.idempotency_key,
            metadata={
                "charge_issue": str(attempt.issue_id),
                "charge_attempt": str(attempt.pk),
                "space": str(space_id),
            },
        )
    except gateway.ProviderError as exc:
        # Outcome unknown: leave the attempt pending for the reconciler; never call again here.
        logger.warning("charge attempt %s outcome unknown: %s", attempt.pk, exc.__class__.__name__)
        ChargeAttempt.objects.filter(pk=attempt.pk).update(last_error=exc.__class__.__name__)
        return attempt
    return charge_attempt_record(attempt=attempt, result=result)


def charge_attempt_record(*, attempt: ChargeAttempt, result: gateway.ChargeResult) -> ChargeAttempt:
    """Record a provider outcome once; a second recording of the same attempt is a no-op.

    The conditional UPDATE on the pending attempt takes its row lock, so of two recorders
    (the worker and the reconciler) exactly one changes it; the issue's move and its audit
    event are written in the same transaction.
    """
    status = ChargeAttempt.Status.SUCCEEDED if result.succeeded else ChargeAttempt.Status.FAILED
    outcome = {
        "status": status,
        "provider_payment_intent_id": result.payment_intent_id,
        "failure_code": result.failure_code,
        "decline_code": result.decline_code,
        "failure_message": result.message[:300],
        "hard_decline": result.hard_decline,
        "finished_at": timezone.now(),
    }
    detail = {"attempt": attempt.pk, "payment_intent": result.payment_intent_id}
    if result.succeeded:
        to_state, action, comment, issue_fields = State.SUCCEEDED, "charge_succeeded", "", {}
    else:
        code = result.decline_code or result.failure_code
        to_state, action, comment = State.FAILED, "charge_failed", result.message
        detail.update(code=code, hard=result.hard_decline)
        issue_fields = {
            "failure_code": code,
            "failure_message": result.message[:300],
            "hard_decline": result.hard_decline,
        }
    _check_transition(State.CHARGING, to_state)
    if connection.vendor in SINGLE_STATEMENT_VENDORS:
        # One statement, so its own transaction (or part of the caller's, the reconciler's).
        recorded, _moved = charging_sql.record(
            attempt_id=attempt.pk,
            outcome=outcome,
            from_state=State.CHARGING,
            to_state=to_state,
            action=action,
            comment=comment,
            detail=detail,
            issue_fields=issue_fields,
            now=outcome["finished_at"],
        )
    else:
        with transaction.atomic():
            recorded = ChargeAttempt.objects.filter(
                pk=attempt.pk, status=ChargeAttempt.Status.PENDING
            ).update(**outcome)
            if recorded:
                _transition_row(
                    attempt.issue_id,
                    State.CHARGING,
                    to_state,
                    action=action,
                    comment=comment,
                    detail=detail,
                    **issue_fields,
                )
    if not recorded:
        attempt.refresh_from_db()
        return attempt
    issue_id, succeeded = attempt.issue_id, result.succeeded
    # Runs at once after an autocommitted record, else when the caller's transaction commits.
    transaction.on_commit(lambda: _after_outcome(issue_id, succeeded))
    for field, value in outcome.items():
        setattr(attempt, field, value)
    return attempt


def _after_outcome(issue_id: int, succeeded: bool) -> None:
    from .tasks import charge_issue_outcome_notify

    charge_issue_outcome_notify.delay(issue_id)


def charge_attempts_reconcile(*, older_than: timedelta = RECONCILE_AFTER) -> int:
    """Settle attempts whose outcome is unknown by asking the provider; returns how many.

    Found at the provider: record what happened. Not found: no charge exists, so the call is
    made again with the same idempotency key.
    """
    settled = 0
    cutoff = timezone.now() - older_than
    pending = ChargeAttempt.objects.filter(
        status=ChargeAttempt.Status.PENDING, created_at__lte=cutoff
    ).values_list("pk", flat=True)
    for attempt_id in list(pending[:200]):
        # The attempt stays locked through the lookup and any new call, so two reconcilers can
        # never both decide "not found" and call twice. If this transaction dies after a call,
        # the attempt is still pending and the next run finds that charge.
        with transaction.atomic():
            attempt = (
                ChargeAttempt.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("issue", "issue__card")
                .filter(pk=attempt_id, status=ChargeAttempt.Status.PENDING)
                .first()
            )
            if attempt is None:
                continue
            try:
                found = gateway.payment_intent_find(
                    customer_id=attempt.issue.provider_customer_id,
                    metadata_key="charge_attempt",
                    metadata_value=str(attempt.pk),
                )
            except gateway.ProviderError as exc:
                logger.warning(
                    "reconcile %s: provider unavailable (%s)", attempt.pk, exc.__class__.__name__
                )
                continue
            if found is not None:
                charge_attempt_record(attempt=attempt, result=found)
            else:
                _charge_attempt_call(
                    attempt,
                    customer_id=attempt.issue.provider_customer_id,
                    payment_method_id=attempt.issue.card.provider_payment_method_id,
                    space_id=attempt.issue.space_id,
                )
            settled += 1
    return settled


def charge_issues_due_dispatch() -> int:
    """Beat: send charge tasks for approved issues whose date has come (also re-sends what a
    lost message left behind; the charge itself is exactly-once)."""
    from .tasks import charge_issue_charge

    due = ChargeIssue.objects.filter(state=State.APPROVED).filter(
        Q(charge_date__isnull=True) | Q(charge_date__lte=timezone.now())
    )
    ids = list(due.values_list("pk", flat=True)[:1000])
    for issue_id in ids:
        charge_issue_charge.delay(issue_id)
    return len(ids)
