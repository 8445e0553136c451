"""Refunds of succeeded charges: request, approval (four eyes above the space's threshold),
and the refund itself, exactly once through payments' money path (payments/attempts.py).

- refund_request: a clerk asks for an amount with a reason. Under the issue's lock the amount
  is checked against what is left (the charge less its succeeded and still open refunds), so
  two concurrent requests can never together exceed the charge. At or below the space's
  refund threshold (Space.refund_threshold_minor, in the space's default currency) it is
  approved by that rule at once; above it, or in another currency, it waits for an approver.
- refund_approve / refund_reject: someone other than the requester decides; every refused
  approval is audited.
- refund_execute (a task, dispatched on commit of the approval): payments' begin → execute →
  record → reconcile with RefundCharge as the owner: the attempt and its idempotency key are
  committed before the provider is called, and an unknown outcome is looked up at the provider
  before anything may call again.

Every step moves the refund along REFUND_TRANSITIONS and writes its RefundEvent in the same
transaction. A succeeded refund adds to the issue's refunded_minor and writes the space's
`charge_issue.refunded` outbound event with it; the customer's email follows on commit.
"""

import logging

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from core import money
from core.logging import log_context_bind
from core.tasks import dispatch, dispatch_due
from payments import attempts, outbox
from payments.attempts import AttemptOwner, Snapshot
from payments.models import ChargeAttempt
from spaces.selectors import user_may_act_in_space, user_works_in_space

from .exceptions import (
    IllegalTransition,
    InvalidAmount,
    InvalidInput,
    NotAllowed,
    NotFound,
    RefundAboveLeft,
    RefundSelfApprovalRefused,
)
from .models import REFUND_OPEN_STATES, REFUND_TRANSITIONS, ChargeIssue, Refund, RefundEvent
from .selectors import charge_issue_paid_attempt

logger = logging.getLogger(__name__)
State = Refund.State
Status = ChargeAttempt.Status

REQUEST_PERMISSION = "billing.enter_amount"  # clerks request, as they enter amounts
APPROVE_PERMISSION = "billing.approve_charge"  # approvers approve, as they approve charges


# --- State machine ----------------------------------------------------------------------------


def _transition(refund, to_state, *, actor, action, comment="", detail=None) -> RefundEvent:
    """Move a refund along REFUND_TRANSITIONS and write its audit event (same transaction)."""
    if to_state not in REFUND_TRANSITIONS[refund.state]:
        raise IllegalTransition(
            f"This refund is “{refund.get_state_display()}”: that step is not possible now."
        )
    from_state = refund.state
    refund.state = to_state
    refund.save()
    return _audit(refund, actor=actor, action=action, from_state=from_state, comment=comment,
                  detail=detail)  # fmt: skip


def _audit(refund, *, actor, action, from_state="", comment="", detail=None) -> RefundEvent:
    return RefundEvent.objects.create(
        refund=refund,
        actor=actor if getattr(actor, "pk", None) else None,
        action=action,
        from_state=from_state,
        to_state=refund.state,
        comment=comment,
        detail=detail or {},
    )


def refund_left_minor(*, issue: ChargeIssue) -> int:
    """What may still be refunded: the charge less its succeeded and open refunds."""
    held = Refund.objects.filter(
        issue_id=issue.pk, state__in=[*REFUND_OPEN_STATES, State.SUCCEEDED]
    ).aggregate(total=Sum("amount_minor"))["total"]
    return (issue.amount_minor or 0) - (held or 0)


def refund_threshold_allows(*, space, amount_minor: int, currency: str) -> bool:
    """At or below the space's threshold (in its default currency) no approver is needed."""
    return currency.upper() == space.default_currency and amount_minor <= (
        space.refund_threshold_minor or 0
    )


# --- Request, approval ------------------------------------------------------------------------


def refund_request(*, issue: ChargeIssue, acting_user, amount, reason: str) -> Refund:
    """A clerk requests a refund of `amount` (decimal text in the charge's currency, see
    money.to_minor) of a succeeded charge, with a reason. Refused above what is left
    (RefundAboveLeft); at or below the space's threshold it is approved by rule and made at
    once, otherwise it waits for an approver other than the requester."""
    if not user_may_act_in_space(
        user=acting_user, permission=REQUEST_PERMISSION, space_id=issue.space_id
    ):
        raise NotAllowed()
    try:
        minor = money.to_minor(amount, issue.currency)
    except money.MoneyError as exc:
        raise InvalidAmount(str(exc), field="amount") from exc
    if minor <= 0:
        raise InvalidAmount("Enter an amount above zero.", field="amount")
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why the customer gets this refund.", field="reason")
    with transaction.atomic():
        # The issue's lock serialises every request for it: the check of what is left and the
        # new refund that holds its part commit together.
        issue = (
            ChargeIssue.objects.select_for_update(of=("self",))
            .select_related("space")
            .get(pk=issue.pk)
        )
        if issue.state != ChargeIssue.State.SUCCEEDED:
            raise IllegalTransition("Only a succeeded charge can be refunded.")
        paid = charge_issue_paid_attempt(issue_id=issue.pk)
        if paid is None:
            raise IllegalTransition(
                "This charge was not made by us, so it cannot be refunded here."
            )
        left = refund_left_minor(issue=issue)
        if minor > left:
            raise RefundAboveLeft(
                f"At most {money.format_money(max(left, 0), issue.currency)} can still be "
                f"refunded (charged {issue.amount_display}, already refunded or requested "
                f"{money.format_money(issue.amount_minor - left, issue.currency)})."
            )
        refund = Refund.objects.create(
            space_id=issue.space_id,
            issue=issue,
            amount_minor=minor,
            currency=issue.currency,
            reason=reason,
            provider_payment_intent_id=paid.provider_payment_intent_id,
            requested_by=acting_user,
        )
        _audit(
            refund,
            actor=acting_user,
            action="requested",
            comment=reason,
            detail={"amount_minor": minor, "currency": issue.currency, "left_minor": left},
        )
        space = issue.space
        if refund_threshold_allows(space=space, amount_minor=minor, currency=issue.currency):
            refund.approved_at = timezone.now()
            _transition(
                refund,
                State.APPROVED,
                actor=None,
                action="approved_by_threshold",
                comment=(
                    f"At or below the space's refund threshold of "
                    f"{money.format_money(space.refund_threshold_minor, space.default_currency)}."
                ),
                detail={
                    "rule": "refund_threshold_minor",
                    "threshold_minor": space.refund_threshold_minor,
                    "currency": space.default_currency,
                },
            )
            refund_id = refund.pk
            transaction.on_commit(lambda: _dispatch_execute(refund_id))
        else:
            _transition(
                refund,
                State.AWAITING_APPROVAL,
                actor=acting_user,
                action="approval_required",
                detail={
                    "threshold_minor": space.refund_threshold_minor,
                    "currency": space.default_currency,
                },
            )
    return refund


def refund_approval_refusal_record(*, refund_id: int, acting_user, code: str) -> None:
    """Audit a refused approval (wrong role, self-approval) on the refund, by a user of its
    space (see _check_approver), in its own transaction (a savepoint inside a caller's), so it
    survives the error that follows."""
    comments = {
        "wrong_role": "Approval refused: the user's role may not approve refunds.",
        RefundSelfApprovalRefused.code: "The user who requested the refund tried to approve it.",
    }
    with transaction.atomic():
        refund = Refund.objects.select_for_update().get(pk=refund_id)
        _audit(
            refund,
            actor=acting_user,
            action="approval_refused",
            from_state=refund.state,
            comment=comments.get(code, "Approval refused."),
            detail={"reason": code},
        )
    logger.info(
        "approval of refund %s refused for user %s: %s",
        refund_id,
        getattr(acting_user, "pk", None),
        code,
    )


def _check_approver(refund: Refund, acting_user) -> None:
    # Outside the user's spaces the refund is not found and nothing is written: a refusal is
    # audited only where the user works.
    if not user_works_in_space(user=acting_user, space_id=refund.space_id):
        logger.info(
            "approval of refund %s refused for user %s: not in their spaces",
            refund.pk,
            getattr(acting_user, "pk", None),
        )
        raise NotFound("There is no such refund in your spaces.")
    if not acting_user.has_perm(APPROVE_PERMISSION):
        refund_approval_refusal_record(
            refund_id=refund.pk, acting_user=acting_user, code="wrong_role"
        )
        raise NotAllowed()
    if refund.requested_by_id is not None and refund.requested_by_id == acting_user.pk:
        refund_approval_refusal_record(
            refund_id=refund.pk, acting_user=acting_user, code=RefundSelfApprovalRefused.code
        )
        raise RefundSelfApprovalRefused()


def refund_approve(*, refund: Refund, acting_user, comment: str = "") -> Refund:
    """The four-eyes check: someone other than the requester approves; the refund is then made
    at once. Every refusal is audited."""
    _check_approver(refund, acting_user)
    with transaction.atomic():
        refund = Refund.objects.select_for_update().get(pk=refund.pk)
        refund.approved_by = acting_user
        refund.approved_at = timezone.now()
        _transition(refund, State.APPROVED, actor=acting_user, action="approved", comment=comment)
        refund_id = refund.pk
        transaction.on_commit(lambda: _dispatch_execute(refund_id))
    return refund


def refund_reject(*, refund: Refund, acting_user, comment: str) -> Refund:
    """An approver turns a refund down, saying why; its amount is free again."""
    _check_approver(refund, acting_user)
    if not (comment or "").strip():
        raise InvalidInput("Say why the refund is rejected.", field="comment")
    with transaction.atomic():
        refund = Refund.objects.select_for_update().get(pk=refund.pk)
        _transition(refund, State.REJECTED, actor=acting_user, action="rejected", comment=comment)
    return refund


# --- The refund itself (exactly once, through payments' one money path) ---------------------


def _dispatch_execute(refund_id: int) -> None:
    from .tasks import refund_execute

    # On commit of the approval: a broker outage is logged, not shown to the approver, and the
    # next refunds_due_dispatch sends it.
    dispatch(refund_execute, refund_id, mark=Refund.objects.filter(pk=refund_id))


def refund_execute(*, refund_id: int) -> ChargeAttempt | None:
    """Make an approved refund at the provider at most once, whoever else runs this
    concurrently (RefundCharge claims the approved refund with SKIP LOCKED and moves it to
    refunding with its attempt in one transaction). None if nothing was called."""
    log_context_bind(refund=refund_id)
    return attempts.attempt_charge(owner=REFUND_CHARGE, owner_id=refund_id)


def refunds_due_dispatch() -> int:
    """Beat: send the task for approved refunds with no message queued (a dispatch that
    failed, or a message the broker lost; the refund itself is exactly-once)."""
    from .tasks import refund_execute

    return dispatch_due(refund_execute, Refund.objects.filter(state=State.APPROVED), limit=500)


def outbound_payload(*, refund: Refund, issue: ChargeIssue, created: int) -> dict:
    customer = issue.customer
    return {
        "type": "charge_issue.refunded",
        "created": created,
        "data": {
            "id": issue.pk,
            "state": issue.state,
            "customer": customer.external_number or f"id:{customer.pk}",
            "amount_minor": issue.amount_minor,
            "currency": issue.currency,
            "reference": issue.external_reference,
            "refunded_minor": issue.refunded_minor,
            "fully_refunded": issue.refunded_minor == issue.amount_minor,
            "refund": {"id": refund.pk, "amount_minor": refund.amount_minor},
        },
    }


class RefundCharge(AttemptOwner):
    """A refund's side of payments' money path. ORM steps on every database: refunds are rare,
    and their outcome touches the refund, the issue and the outbox."""

    purpose = ChargeAttempt.Purpose.REFUND
    field = "refund"
    metadata_key = "refund"
    key_prefix = "refund-"
    single_statement = False
    operation = "refund"

    def claim(self, *, owner_id, now) -> Snapshot | None:
        refund = (
            Refund.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("issue")
            .filter(pk=owner_id, state=State.APPROVED)
            .first()
        )
        if refund is None:
            return None
        return Snapshot(
            owner_id=refund.pk,
            space_id=refund.space_id,
            provider_customer_id=refund.issue.provider_customer_id,
            payment_method_id="",
            amount_minor=refund.amount_minor,
            currency=refund.currency,
            payment_intent_id=refund.provider_payment_intent_id,
        )

    def claimed(self, *, owner_id, attempt) -> None:
        refund = Refund.objects.get(pk=owner_id)
        _transition(
            refund, State.REFUNDING, actor=None, action="refund_started",
            detail={"attempt": attempt.pk},
        )  # fmt: skip

    def settled(self, *, attempt, outbound_id) -> list:
        refund = Refund.objects.select_for_update().get(pk=attempt.refund_id)
        if refund.state != State.REFUNDING:
            return []
        detail = {"attempt": attempt.pk, "provider_refund": attempt.provider_refund_id}
        refund.provider_refund_id = attempt.provider_refund_id
        if attempt.status != Status.SUCCEEDED:
            refund.failure_code = attempt.failure_code or attempt.decline_code
            refund.failure_message = attempt.failure_message
            _transition(
                refund,
                State.FAILED,
                actor=None,
                action="refund_failed",
                comment=attempt.failure_message,
                detail={**detail, "code": refund.failure_code},
            )
            return []
        _transition(refund, State.SUCCEEDED, actor=None, action="refund_succeeded", detail=detail)
        ChargeIssue.objects.filter(pk=refund.issue_id).update(
            refunded_minor=F("refunded_minor") + refund.amount_minor, updated_at=timezone.now()
        )
        issue = ChargeIssue.objects.select_related("space", "customer").get(pk=refund.issue_id)
        if not issue.space.webhook_url:
            return []
        event = outbox.outbound_event_create(
            id=outbound_id,
            space=issue.space,
            type="charge_issue.refunded",
            payload=outbound_payload(
                refund=refund, issue=issue, created=int(timezone.now().timestamp())
            ),
        )
        return [event.pk]


REFUND_CHARGE = RefundCharge()


def refund_customer_email_dispatch(*, refund_id: int) -> None:
    """After a refund succeeded (on commit): the customer's email, its own task."""
    from .tasks import refund_customer_email

    dispatch(refund_customer_email, refund_id)
