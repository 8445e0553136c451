"""The two statements of every charge, each one PostgreSQL round trip (and so one commit).

charge_issue_charge is the hot path: through the ORM its claim and its record take 11 round
trips (BEGIN, 7 statements, 2 COMMITs). Here each is one statement whose data-modifying CTEs
succeed or fail together, so the guarantees are the same as the ORM path in services.py:
- claim: the issue row is locked with FOR UPDATE SKIP LOCKED, moved approved -> charging only if
  it still is approved and due, and the attempt (unique per issue, with its idempotency key) and
  the audit event are inserted in the same statement;
- record: the attempt is updated only while pending and its issue charging (the attempt's row
  lock makes one recorder win), the issue moved charging -> succeeded/failed, and the audit
  event inserted, together.
States come in as parameters checked against TRANSITIONS by the caller.
"""

import json

from django.db import connection

from cards.models import PaymentCard

from .models import ChargeAttempt, ChargeIssue, ChargeIssueEvent


def _tables() -> dict[str, str]:
    quote = connection.ops.quote_name
    return {
        "issue": quote(ChargeIssue._meta.db_table),
        "attempt": quote(ChargeAttempt._meta.db_table),
        "event": quote(ChargeIssueEvent._meta.db_table),
        "card": quote(PaymentCard._meta.db_table),
    }


CLAIM = """
WITH claimed AS (
    SELECT i.id, i.space_id, i.amount_minor, i.currency, i.provider_customer_id,
           c.provider_payment_method_id
    FROM {issue} i JOIN {card} c ON c.id = i.card_id
    WHERE i.id = %(issue)s AND i.state = %(from)s
      AND (i.charge_date IS NULL OR i.charge_date <= %(now)s)
    FOR UPDATE OF i SKIP LOCKED
), moved AS (
    UPDATE {issue} SET state = %(to)s, updated_at = %(now)s
    FROM claimed WHERE {issue}.id = claimed.id
    RETURNING {issue}.id
), attempt AS (
    INSERT INTO {attempt} (issue_id, idempotency_key, amount_minor, currency, status,
        provider_payment_intent_id, failure_code, decline_code, failure_message, hard_decline,
        last_error, created_at)
    SELECT id, %(key_prefix)s || id, amount_minor, currency, %(pending)s,
        '', '', '', '', false, '', %(now)s
    FROM claimed
    RETURNING id, issue_id, idempotency_key
), event AS (
    INSERT INTO {event} (issue_id, action, from_state, to_state, comment, detail, created_at)
    SELECT attempt.issue_id, %(action)s, %(from)s, %(to)s, '',
           jsonb_build_object('attempt', attempt.id), %(now)s
    FROM attempt
)
SELECT claimed.id, claimed.space_id, claimed.amount_minor, claimed.currency,
       claimed.provider_customer_id, claimed.provider_payment_method_id,
       attempt.id, attempt.idempotency_key
FROM claimed JOIN attempt ON attempt.issue_id = claimed.id
"""

RECORD = """
WITH recorded AS (
    UPDATE {attempt} a SET status = %(status)s, provider_payment_intent_id = %(intent)s,
        failure_code = %(failure_code)s, decline_code = %(decline_code)s,
        failure_message = %(message)s, hard_decline = %(hard)s, finished_at = %(now)s
    FROM {issue} i
    WHERE a.id = %(attempt)s AND a.status = %(pending)s
      AND i.id = a.issue_id AND i.state = %(from)s
    RETURNING a.issue_id
), moved AS (
    UPDATE {issue} SET state = %(to)s, updated_at = %(now)s,
        failure_code = %(issue_failure_code)s, failure_message = %(issue_failure_message)s,
        hard_decline = %(issue_hard)s
    WHERE id IN (SELECT issue_id FROM recorded) AND state = %(from)s
    RETURNING id
), event AS (
    INSERT INTO {event} (issue_id, action, from_state, to_state, comment, detail, created_at)
    SELECT id, %(action)s, %(from)s, %(to)s, %(comment)s, %(detail)s::jsonb, %(now)s FROM moved
)
SELECT (SELECT count(*) FROM recorded), (SELECT count(*) FROM moved)
"""


def claim(*, issue_id, from_state, to_state, action, key_prefix, now):
    with connection.cursor() as cursor:
        cursor.execute(
            CLAIM.format(**_tables()),
            {
                "issue": issue_id,
                "from": from_state,
                "to": to_state,
                "action": action,
                "key_prefix": key_prefix,
                "pending": ChargeAttempt.Status.PENDING,
                "now": now,
            },
        )
        return cursor.fetchone()


def record(
    *, attempt_id, outcome, from_state, to_state, action, comment, detail, issue_fields, now
):
    with connection.cursor() as cursor:
        cursor.execute(
            RECORD.format(**_tables()),
            {
                "attempt": attempt_id,
                "pending": ChargeAttempt.Status.PENDING,
                "status": outcome["status"],
                "intent": outcome["provider_payment_intent_id"],
                "failure_code": outcome["failure_code"],
                "decline_code": outcome["decline_code"],
                "message": outcome["failure_message"],
                "hard": outcome["hard_decline"],
                "from": from_state,
                "to": to_state,
                "action": action,
                "comment": comment,
                "detail": json.dumps(detail),
                "issue_failure_code": issue_fields.get("failure_code", ""),
                "issue_failure_message": issue_fields.get("failure_message", ""),
                "issue_hard": issue_fields.get("hard_decline", False),
                "now": now,
            },
        )
        return cursor.fetchone()
