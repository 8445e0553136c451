"""How a charging issue takes part in payments' money path (payments/attempts.py).

payments runs begin → execute → record → reconcile; this module is the issue's side of it:
which issue is due, its move approved → charging when its attempt begins, and the outcome
applied to TRANSITIONS (charging → succeeded/failed) with its audit event and outbound event
in the same transaction as the attempt's record. On PostgreSQL those are pieces of payments'
two statements; the ORM methods do the same for SQLite and are the readable reference.
"""

import json

from django.db import connection
from django.utils import timezone

from cards.models import Customer, PaymentCard
from payments import outbox
from payments.attempts import AttemptOwner, Snapshot
from payments.models import ChargeAttempt, OutboundEvent
from spaces.models import Space

from .exceptions import IllegalTransition
from .models import TRANSITIONS, ChargeIssue, ChargeIssueEvent
from .selectors import charge_issue_due_q

State = ChargeIssue.State
Status = ChargeAttempt.Status

# The outcome of an attempt, as the issue state it leads to (checked against TRANSITIONS below).
# A failed charge is not the end: the issue is collected by a charge flow (chargeflows opens
# the case when billing.signals.collection_started arrives).
OUTCOME_STATES = {Status.SUCCEEDED: State.SUCCEEDED, Status.FAILED: State.COLLECTING}


def check_transition(from_state, to_state) -> None:
    if to_state not in TRANSITIONS[from_state]:
        raise IllegalTransition(f"{from_state} -> {to_state} is not a declared transition.")


check_transition(State.APPROVED, State.CHARGING)
for _state in OUTCOME_STATES.values():
    check_transition(State.CHARGING, _state)


def outbound_payload(*, issue, customer_ref: str, created: int) -> dict:
    """The space webhook's body for an issue's outcome (the SQL below builds the same)."""
    return {
        "type": f"charge_issue.{issue.state}",
        "created": created,
        "data": {
            "id": issue.pk,
            "state": issue.state,
            # The same form the API accepts: the external number, else "id:<pk>".
            "customer": customer_ref,
            "amount_minor": issue.amount_minor,
            "currency": issue.currency,
            "reference": issue.external_reference,
            "failure_code": issue.failure_code,
            "failure_message": issue.failure_message,
            "hard_decline": issue.hard_decline,
        },
    }


def _q(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


class IssueCharge(AttemptOwner):
    purpose = ChargeAttempt.Purpose.ISSUE_CHARGE
    field = "charge_issue"
    metadata_key = "charge_issue"
    key_prefix = "charge-issue-"

    # The due rule is billing.selectors.charge_issue_due_q; DUE_SQL is its SQL rendering.
    DUE_SQL = "i.state = %(o_approved)s AND (i.charge_date IS NULL OR i.charge_date <= %(now)s)"

    def sql_params(self) -> dict:
        return {
            "o_approved": State.APPROVED,
            "o_charging": State.CHARGING,
            "o_succeeded": Status.SUCCEEDED,
            "o_failed": Status.FAILED,
            "o_state_succeeded": OUTCOME_STATES[Status.SUCCEEDED],
            "o_state_failed": OUTCOME_STATES[Status.FAILED],
        }

    @property
    def claim_sql(self) -> str:
        return f"""
    SELECT i.id AS owner_id, i.space_id, i.provider_customer_id,
           c.provider_payment_method_id AS payment_method_id, i.amount_minor, i.currency
    FROM {_q(ChargeIssue)} i JOIN {_q(PaymentCard)} c ON c.id = i.card_id
    WHERE i.id = %(owner)s AND {self.DUE_SQL}
    FOR UPDATE OF i SKIP LOCKED"""

    @property
    def claimed_sql(self) -> str:
        return f""",
moved AS (
    UPDATE {_q(ChargeIssue)} SET state = %(o_charging)s, updated_at = %(now)s
    FROM attempt WHERE {_q(ChargeIssue)}.id = attempt.owner_id
    RETURNING {_q(ChargeIssue)}.id
), issue_event AS (
    INSERT INTO {_q(ChargeIssueEvent)} (issue_id, action, from_state, to_state, comment,
        detail, created_at)
    SELECT attempt.owner_id, 'charge_started', %(o_approved)s, %(o_charging)s, '',
           jsonb_build_object('attempt', attempt.id), %(now)s
    FROM attempt
)"""

    @property
    def settled_sql(self) -> str:
        issue = _q(ChargeIssue)
        return f""",
settled AS (
    UPDATE {issue} i SET
        state = CASE r.status WHEN %(o_succeeded)s THEN %(o_state_succeeded)s
                ELSE %(o_state_failed)s END,
        updated_at = %(now)s,
        failure_code = CASE r.status WHEN %(o_succeeded)s THEN ''
                       ELSE COALESCE(NULLIF(r.decline_code, ''), r.failure_code) END,
        failure_message = CASE r.status WHEN %(o_succeeded)s THEN '' ELSE r.failure_message END,
        hard_decline = CASE r.status WHEN %(o_succeeded)s THEN false ELSE r.hard_decline END
    FROM recorded r
    WHERE i.id = r.owner_id AND i.state = %(o_charging)s
      AND r.status IN (%(o_succeeded)s, %(o_failed)s)
    RETURNING i.id, i.state, i.space_id, i.customer_id, i.amount_minor, i.currency,
              i.external_reference, i.failure_code, i.failure_message, i.hard_decline,
              r.id AS attempt_id, r.provider_payment_intent_id AS intent, r.status
), settled_event AS (
    INSERT INTO {_q(ChargeIssueEvent)} (issue_id, action, from_state, to_state, comment,
        detail, created_at)
    SELECT id,
           CASE status WHEN %(o_succeeded)s THEN 'charge_succeeded' ELSE 'charge_failed' END,
           %(o_charging)s, state, failure_message,
           jsonb_build_object('attempt', attempt_id, 'payment_intent', intent)
           || CASE status WHEN %(o_succeeded)s THEN '{{}}'::jsonb
              ELSE jsonb_build_object('code', failure_code, 'hard', hard_decline) END,
           %(now)s
    FROM settled
), outbound AS (
    INSERT INTO {_q(OutboundEvent)} (id, space_id, type, payload, url, created_at, tries,
        given_up)
    SELECT %(outbound_id)s, s.space_id, 'charge_issue.' || s.state,
           jsonb_build_object(
               'type', 'charge_issue.' || s.state,
               'created', floor(extract(epoch FROM %(now)s::timestamptz))::bigint,
               'data', jsonb_build_object(
                   'id', s.id, 'state', s.state,
                   'customer', CASE WHEN cu.external_number <> '' THEN cu.external_number
                               ELSE 'id:' || cu.id END,
                   'amount_minor', s.amount_minor, 'currency', s.currency,
                   'reference', s.external_reference, 'failure_code', s.failure_code,
                   'failure_message', s.failure_message, 'hard_decline', s.hard_decline)),
           sp.webhook_url, %(now)s, 0, false
    FROM settled s JOIN {_q(Space)} sp ON sp.id = s.space_id
         JOIN {_q(Customer)} cu ON cu.id = s.customer_id
    WHERE sp.webhook_url <> ''
    RETURNING id
)"""

    settled_result_sql = "(SELECT array_agg(id) FROM outbound)"

    # --- ORM path ---

    def claim(self, *, owner_id, now) -> Snapshot | None:
        row = (
            ChargeIssue.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(charge_issue_due_q(now), pk=owner_id)
            .values_list(
                "pk",
                "space_id",
                "provider_customer_id",
                "card__provider_payment_method_id",
                "amount_minor",
                "currency",
            )
            .first()
        )
        return Snapshot(*row) if row else None

    def claimed(self, *, owner_id, attempt) -> None:
        _transition_row(
            owner_id,
            State.APPROVED,
            State.CHARGING,
            action="charge_started",
            detail={"attempt": attempt.pk},
        )

    def settled(self, *, attempt, outbound_id) -> list:
        to_state = OUTCOME_STATES[attempt.status]
        detail = {"attempt": attempt.pk, "payment_intent": attempt.provider_payment_intent_id}
        if attempt.status == Status.SUCCEEDED:
            action, comment = "charge_succeeded", ""
            fields = {"failure_code": "", "failure_message": "", "hard_decline": False}
        else:
            code = attempt.decline_code or attempt.failure_code
            action, comment = "charge_failed", attempt.failure_message
            detail.update(code=code, hard=attempt.hard_decline)
            fields = {
                "failure_code": code,
                "failure_message": attempt.failure_message,
                "hard_decline": attempt.hard_decline,
            }
        moved = _transition_row(
            attempt.charge_issue_id,
            State.CHARGING,
            to_state,
            action=action,
            comment=comment,
            detail=detail,
            strict=False,
            **fields,
        )
        if not moved:
            return []
        issue = ChargeIssue.objects.select_related("space", "customer").get(
            pk=attempt.charge_issue_id
        )
        if not issue.space.webhook_url:
            return []
        customer = issue.customer
        event = outbox.outbound_event_create(
            id=outbound_id,
            space=issue.space,
            type=f"charge_issue.{issue.state}",
            payload=outbound_payload(
                issue=issue,
                customer_ref=customer.external_number or f"id:{customer.pk}",
                created=int(timezone.now().timestamp()),
            ),
        )
        return [event.pk]


def _transition_row(
    issue_id, from_state, to_state, *, action, comment="", detail=None, strict=True, **fields
) -> bool:
    """A state change for the charging path: one conditional UPDATE plus the audit INSERT.
    strict: a row no longer in from_state is an error (else: nothing happens, False)."""
    check_transition(from_state, to_state)
    updated = ChargeIssue.objects.filter(pk=issue_id, state=from_state).update(
        state=to_state, updated_at=timezone.now(), **fields
    )
    if updated != 1:
        if strict:
            raise IllegalTransition(f"Charge #{issue_id} is no longer {from_state}.")
        return False
    ChargeIssueEvent.objects.create(
        issue_id=issue_id,
        action=action,
        from_state=from_state,
        to_state=to_state,
        comment=comment,
        detail=json.loads(json.dumps(detail or {})),
    )
    return True


ISSUE_CHARGE = IssueCharge()
