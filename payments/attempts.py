"""The one money path: begin → execute → record → reconcile, for every charge whatever asked.

- begin: lock the owner (skipping it if another worker holds it), check it is due, move it to
  its "charging" state and commit the attempt with its idempotency key and a snapshot of what
  is charged, all in one transaction;
- execute: one provider call, after that commit;
- record: a conditional UPDATE that only an unsettled attempt accepts, so of the worker, the
  reconciler and a provider webhook exactly one recorder wins; the owner's own rows (its state,
  its audit event, its outbound event) are written in the same transaction by the owner;
- reconcile: an attempt whose outcome is unknown is looked up at the provider before anything
  may call again.

An owner (an issue, a flow level, a payment link, a refund) declares itself with an
AttemptOwner registered at startup, and learns every final outcome through the one signal
`attempt_settled`, sent on commit. A refund owner (operation "refund") goes through the same
four steps; only the provider call and the lookup of an unknown outcome differ.

Locks: a record locks the attempt first (its conditional UPDATE) and the owner's settled code
locks the owner's rows after it; the reconciler holds the attempt across its provider lookup.
So an owner must never wait for an existing attempt while it holds its own rows; it may only
create one (begin). Each owner writes the order of its own rows beside its code.

On PostgreSQL begin and record are each ONE statement (data-modifying CTEs that succeed or fail
together), so a charge costs two round trips besides the provider call; elsewhere (SQLite in
the local run) the ORM does the same steps. Tests run both paths.
"""

import logging
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from core.tasks import Deadline

from . import gateway
from .models import ChargeAttempt
from .signals import attempt_settled

logger = logging.getLogger(__name__)
Status = ChargeAttempt.Status

# An attempt still unsettled after this long lost its worker (crash, timeout): reconcile it.
# Longer than any provider call can take, so the original call cannot still land afterwards.
RECONCILE_AFTER = timedelta(minutes=2)
FINAL = (Status.SUCCEEDED, Status.FAILED)
# What a recording may move an attempt from: only unsettled attempts accept an outcome, and a
# "processing" result never replaces another processing or final one.
_RECORDABLE = {
    Status.SUCCEEDED: [Status.PENDING, Status.UNKNOWN, Status.PROCESSING],
    Status.FAILED: [Status.PENDING, Status.UNKNOWN, Status.PROCESSING],
    Status.PROCESSING: [Status.PENDING, Status.UNKNOWN],
}

# begin and record run as single statements where the database allows it.
SINGLE_STATEMENT_VENDORS = {"postgresql"}


@dataclass(frozen=True)
class Snapshot:
    """What an owner wants charged, read under its lock."""

    owner_id: int
    space_id: int
    provider_customer_id: str
    payment_method_id: str
    amount_minor: int
    currency: str
    # A refund's snapshot: the charge's PaymentIntent it refunds (empty for charges).
    payment_intent_id: str = ""


class AttemptOwner(ABC):
    """What payments needs from a kind of owner. The owner's app subclasses it and registers an
    instance with register_owner() (billing does so in billing/receivers.py).

    ORM path: claim() locks and reads a due owner, claimed() moves it to "charging" and audits,
    settled() applies a final outcome; each runs inside payments' transaction.
    PostgreSQL path: the same three as SQL pieces of payments' two statements:
    - claim_sql: a SELECT of one due owner, locked FOR UPDATE SKIP LOCKED, with the columns
      owner_id, space_id, provider_customer_id, payment_method_id, amount_minor, currency;
    - claimed_sql: CTEs (each starting with ", name AS (") run after the `attempt` CTE
      (columns id, owner_id);
    - settled_sql: CTEs after `recorded` (columns id, owner_id, status, failure_code,
      decline_code, failure_message, hard_decline, provider_payment_intent_id); they must do
      nothing unless status is final. settled_result_sql: one expression, the outbound event
      ids written (uuid[] or NULL).
    Parameters: %(owner)s, %(now)s, %(outbound_id)s, and the owner's own from sql_params(),
    whose names start with "o_".
    """

    purpose: str
    field: str  # the owner's foreign key on ChargeAttempt
    metadata_key: str  # the owner's marker in the PaymentIntent's metadata
    key_prefix: str  # idempotency key = key_prefix + owner id

    # False: this owner has no SQL pieces and takes the ORM path on every database (an owner
    # whose charges are rare may prefer readable steps to saving round trips).
    single_statement = True
    # True: the customer is present (a hosted page). The charge is confirmed on-session, and a
    # card asking for 3-D Secure leaves the attempt processing until the page completes it
    # (or the reconciler finds it abandoned and records the failure).
    customer_present = False
    # "charge": create and confirm a PaymentIntent; "refund": refund the snapshot's
    # PaymentIntent by the snapshot's amount (ORM path only: single_statement must be False).
    operation = "charge"
    claim_sql = ""
    claimed_sql = ""
    settled_sql = ""
    settled_result_sql = "NULL"

    def sql_params(self) -> dict:
        return {}

    @abstractmethod
    def claim(self, *, owner_id, now) -> Snapshot | None:
        raise NotImplementedError

    @abstractmethod
    def claimed(self, *, owner_id, attempt: ChargeAttempt) -> None:
        raise NotImplementedError

    @abstractmethod
    def settled(self, *, attempt: ChargeAttempt, outbound_id: uuid.UUID) -> list:
        """Apply a final outcome; returns the ids of outbound events written."""
        raise NotImplementedError


_OWNERS: dict[str, AttemptOwner] = {}


def register_owner(owner: AttemptOwner) -> None:
    _OWNERS[owner.purpose] = owner


def owner_for(purpose: str) -> AttemptOwner:
    return _OWNERS[purpose]


def _tables() -> dict[str, str]:
    return {"attempt": connection.ops.quote_name(ChargeAttempt._meta.db_table)}


# --- begin --------------------------------------------------------------------------------------

BEGIN_SQL = """
WITH claimed AS ({claim_sql}),
attempt AS (
    INSERT INTO {attempt} ({field}_id, space_id, purpose, provider_customer_id,
        provider_payment_method_id, amount_minor, currency, idempotency_key, status,
        provider_payment_intent_id, provider_charge_id, failure_code, decline_code,
        failure_message, hard_decline, last_error, created_at)
    SELECT owner_id, space_id, %(purpose)s, provider_customer_id, payment_method_id,
        amount_minor, currency, %(key_prefix)s || owner_id, %(pending)s,
        '', '', '', '', '', false, '', %(now)s
    FROM claimed
    RETURNING id, {field}_id AS owner_id, idempotency_key
){claimed_sql}
SELECT attempt.id, attempt.idempotency_key, claimed.owner_id, claimed.space_id,
       claimed.provider_customer_id, claimed.payment_method_id, claimed.amount_minor,
       claimed.currency
FROM claimed JOIN attempt ON attempt.owner_id = claimed.owner_id
"""


def attempt_begin(*, owner: AttemptOwner, owner_id) -> ChargeAttempt | None:
    """Claim a due owner and commit its attempt; None if it is not due, not in the state that
    may be charged, or held by another worker.

    Inside a caller's transaction (an owner that claims and charges in one step, under locks
    it holds already) the attempt commits with the caller's transaction, and the caller calls
    attempt_execute only after that commit."""
    now = timezone.now()
    if owner.single_statement and connection.vendor in SINGLE_STATEMENT_VENDORS:
        with connection.cursor() as cursor:
            cursor.execute(
                BEGIN_SQL.format(
                    claim_sql=owner.claim_sql,
                    claimed_sql=owner.claimed_sql,
                    field=owner.field,
                    **_tables(),
                ),
                {
                    "owner": owner_id,
                    "now": now,
                    "purpose": owner.purpose,
                    "key_prefix": owner.key_prefix,
                    "pending": Status.PENDING,
                    **owner.sql_params(),
                },
            )
            row = cursor.fetchone()
        if row is None:
            return None
        attempt_id, key, owner_pk, space_id, customer, method, amount, currency = row
        attempt = ChargeAttempt(
            pk=attempt_id,
            space_id=space_id,
            purpose=owner.purpose,
            provider_customer_id=customer,
            provider_payment_method_id=method,
            amount_minor=amount,
            currency=currency,
            idempotency_key=key,
            status=Status.PENDING,
            created_at=now,
            **{f"{owner.field}_id": owner_pk},
        )
        attempt._state.adding = False
        return attempt
    with transaction.atomic():
        snapshot = owner.claim(owner_id=owner_id, now=now)
        if snapshot is None:
            return None
        attempt = ChargeAttempt.objects.create(
            space_id=snapshot.space_id,
            purpose=owner.purpose,
            provider_customer_id=snapshot.provider_customer_id,
            provider_payment_method_id=snapshot.payment_method_id,
            amount_minor=snapshot.amount_minor,
            currency=snapshot.currency,
            provider_payment_intent_id=snapshot.payment_intent_id,
            idempotency_key=f"{owner.key_prefix}{snapshot.owner_id}",
            **{f"{owner.field}_id": snapshot.owner_id},
        )
        owner.claimed(owner_id=snapshot.owner_id, attempt=attempt)
    return attempt


# --- execute ------------------------------------------------------------------------------------


def attempt_execute(*, attempt: ChargeAttempt) -> ChargeAttempt:
    """The one provider call of a committed attempt, then its record. A call whose outcome is
    unknown (network, timeout, 5xx) leaves the attempt `unknown` for the reconciler: it is never
    called again here."""
    owner = owner_for(attempt.purpose)
    metadata = {
        owner.metadata_key: str(attempt.owner_id),
        "charge_attempt": str(attempt.pk),
        "space": str(attempt.space_id),
    }
    try:
        if owner.operation == "refund":
            result = gateway.refund_create(
                payment_intent_id=attempt.provider_payment_intent_id,
                amount_minor=attempt.amount_minor,
                idempotency_key=attempt.idempotency_key,
                metadata=metadata,
            )
        else:
            result = gateway.payment_intent_charge_off_session(
                customer_id=attempt.provider_customer_id,
                payment_method_id=attempt.provider_payment_method_id,
                amount_minor=attempt.amount_minor,
                currency=attempt.currency,
                idempotency_key=attempt.idempotency_key,
                metadata=metadata,
                off_session=not owner.customer_present,
            )
    except gateway.ProviderError as exc:
        logger.warning("charge attempt %s outcome unknown: %s", attempt.pk, exc.__class__.__name__)
        ChargeAttempt.objects.filter(pk=attempt.pk, status=Status.PENDING).update(
            status=Status.UNKNOWN, last_error=exc.__class__.__name__
        )
        attempt.status = Status.UNKNOWN
        return attempt
    _test_pause_after_provider_call()
    attempt_record(attempt=attempt, result=result)
    return attempt


def _test_pause_after_provider_call() -> None:
    """Test-only hook: the real-broker tests (tests/payments/test_real_broker.py) make a worker
    wait here, where the provider has charged and nothing is recorded yet, so they can SIGKILL
    it at the worst moment. The setting exists only in config.settings.test (default 0)."""
    seconds = getattr(settings, "PAYMENTS_TEST_PAUSE_AFTER_PROVIDER_CALL_SECONDS", 0)
    if seconds:
        time.sleep(seconds)


def attempt_charge(*, owner: AttemptOwner, owner_id) -> ChargeAttempt | None:
    """begin + execute: what an owner's charge task runs. None if nothing was charged."""
    attempt = attempt_begin(owner=owner, owner_id=owner_id)
    if attempt is None:
        return None
    return attempt_execute(attempt=attempt)


# --- record -------------------------------------------------------------------------------------

RECORD_SQL = """
WITH recorded AS (
    UPDATE {attempt} SET status = %(status)s,
        provider_payment_intent_id = CASE WHEN %(intent)s = '' THEN provider_payment_intent_id
                                          ELSE %(intent)s END,
        provider_charge_id = CASE WHEN %(charge)s = '' THEN provider_charge_id
                                  ELSE %(charge)s END,
        failure_code = %(failure_code)s, decline_code = %(decline_code)s,
        failure_message = %(message)s, hard_decline = %(hard)s, finished_at = %(finished)s
    WHERE id = %(attempt_id)s AND status = ANY(%(from_statuses)s)
    RETURNING id, {field}_id AS owner_id, status, failure_code, decline_code, failure_message,
              hard_decline, provider_payment_intent_id
){settled_sql}
SELECT (SELECT count(*) FROM recorded), {settled_result_sql}
"""


def _status_of(result: gateway.ChargeResult, owner: AttemptOwner) -> str:
    if result.succeeded:
        return Status.SUCCEEDED
    if result.status == "processing":
        return Status.PROCESSING
    if result.status == "requires_action" and owner.customer_present:
        return Status.PROCESSING  # the customer completes 3-D Secure on the page
    return Status.FAILED


def attempt_record(*, attempt: ChargeAttempt, result: gateway.ChargeResult) -> bool:
    """Record a provider outcome once; True if this call recorded it, False if another
    recorder (worker, reconciler, webhook) was first or the attempt is already final.

    The conditional UPDATE takes the attempt's row lock, so of two recorders exactly one
    changes it; the owner's writes join the same transaction. A final outcome is announced
    with attempt_settled once the transaction commits.
    """
    owner = owner_for(attempt.purpose)
    status = _status_of(result, owner)
    final = status in FINAL
    values = {
        "status": status,
        "provider_payment_intent_id": result.payment_intent_id,
        "provider_charge_id": result.charge_id,
        "provider_refund_id": result.refund_id,
        "failure_code": "" if final and result.succeeded else result.failure_code,
        "decline_code": result.decline_code,
        "failure_message": result.message[:300],
        "hard_decline": result.hard_decline,
        "finished_at": timezone.now() if final else None,
    }
    if status == Status.PROCESSING:
        values["failure_code"] = ""
    outbound_id = uuid.uuid4()
    outbound_ids: list = []
    if owner.single_statement and connection.vendor in SINGLE_STATEMENT_VENDORS:
        sql = RECORD_SQL.format(
            field=owner.field,
            settled_sql=owner.settled_sql,
            settled_result_sql=owner.settled_result_sql,
            **_tables(),
        )
        with connection.cursor() as cursor:
            # One statement: its own transaction, or part of the caller's (the reconciler's).
            cursor.execute(
                sql,
                {
                    "attempt_id": attempt.pk,
                    "from_statuses": _RECORDABLE[status],
                    "status": status,
                    "intent": values["provider_payment_intent_id"],
                    "charge": values["provider_charge_id"],
                    "failure_code": values["failure_code"],
                    "decline_code": values["decline_code"],
                    "message": values["failure_message"],
                    "hard": values["hard_decline"],
                    "finished": values["finished_at"],
                    "owner": attempt.owner_id,
                    "now": timezone.now(),
                    "outbound_id": outbound_id,
                    **owner.sql_params(),
                },
            )
            recorded, ids = cursor.fetchone()
        outbound_ids = list(ids or [])
    else:
        with transaction.atomic():
            recorded = ChargeAttempt.objects.filter(
                pk=attempt.pk, status__in=_RECORDABLE[status]
            ).update(**_kept_ids(values))
            if recorded:
                attempt.refresh_from_db()
                if final:
                    outbound_ids = owner.settled(attempt=attempt, outbound_id=outbound_id)
    if not recorded:
        return False
    for field, value in _kept_ids(values).items():
        setattr(attempt, field, value)
    if final:
        attempt_id, purpose, owner_id = attempt.pk, attempt.purpose, attempt.owner_id
        transaction.on_commit(
            lambda: _after_settle(attempt_id, purpose, owner_id, status, outbound_ids)
        )
    return True


def _kept_ids(values: dict) -> dict:
    """An outcome without provider ids (a call that failed before creating anything) keeps the
    ids an earlier recording or the webhook stored."""
    ids = ("provider_payment_intent_id", "provider_charge_id", "provider_refund_id")
    return {k: v for k, v in values.items() if not (k in ids and not v)}


def _after_settle(attempt_id, purpose, owner_id, status, outbound_ids) -> None:
    from .outbox import outbound_events_dispatch

    outbound_events_dispatch(ids=outbound_ids)
    attempt_settled.send(
        sender=ChargeAttempt,
        attempt_id=attempt_id,
        purpose=purpose,
        owner_id=owner_id,
        status=status,
    )


def attempt_record_from_provider(*, payment_intent: dict) -> bool | None:
    """Settle the attempt a provider PaymentIntent (from a webhook) belongs to through the same
    record step. None if it is not one of our attempts."""
    metadata = payment_intent.get("metadata") or {}
    attempt = None
    if str(metadata.get("charge_attempt", "")).isdigit():
        attempt = ChargeAttempt.objects.filter(pk=int(metadata["charge_attempt"])).first()
    if attempt is None and payment_intent.get("id"):
        # A refund's attempt holds the PaymentIntent it refunds: never the charge's attempt.
        attempt = (
            ChargeAttempt.objects.filter(provider_payment_intent_id=payment_intent["id"])
            .exclude(purpose=ChargeAttempt.Purpose.REFUND)
            .first()
        )
    if attempt is None or attempt.purpose == ChargeAttempt.Purpose.REFUND:
        return None
    return attempt_record(attempt=attempt, result=gateway.charge_result_from(payment_intent))


def attempt_record_refund_from_provider(*, refund: dict) -> bool | None:
    """Settle the refund attempt a provider Refund (from a webhook) belongs to through the
    same record step. None if it is not one of our refunds."""
    metadata = refund.get("metadata") or {}
    refunds = ChargeAttempt.objects.filter(purpose=ChargeAttempt.Purpose.REFUND)
    attempt = None
    if str(metadata.get("charge_attempt", "")).isdigit():
        attempt = refunds.filter(pk=int(metadata["charge_attempt"])).first()
    if attempt is None and refund.get("id"):
        attempt = refunds.filter(provider_refund_id=refund["id"]).first()
    if attempt is None:
        return None
    return attempt_record(attempt=attempt, result=gateway.refund_result_from(refund))


# --- reconcile ----------------------------------------------------------------------------------


def _abandoned(result: gateway.ChargeResult) -> gateway.ChargeResult:
    return gateway.ChargeResult(
        succeeded=False,
        payment_intent_id=result.payment_intent_id,
        status="requires_payment_method",
        failure_code="authentication_abandoned",
        message="The payment was not authenticated in time.",
    )


def attempt_refresh(*, attempt: ChargeAttempt) -> bool:
    """Read a processing attempt's PaymentIntent again and record it if it moved on (a hosted
    page calls this when the customer has completed 3-D Secure)."""
    if attempt.status != Status.PROCESSING or not attempt.provider_payment_intent_id:
        return False
    found = gateway.payment_intent_retrieve(attempt.provider_payment_intent_id)
    return attempt_record(attempt=attempt, result=found)


UNSETTLED = (Status.PENDING, Status.UNKNOWN, Status.PROCESSING)
# How long one reconciler holds an attempt (ChargeAttempt.reconciling_until) while it asks the
# provider and perhaps calls it again, with no transaction or row lock open. Far longer than
# those two calls can take (each at most STRIPE_TIMEOUT_SECONDS), so two reconcilers can never
# both find "no charge" and both call. A still-processing attempt keeps it as its wait before
# the next look.
RECONCILE_LEASE = timedelta(minutes=5)
RECONCILE_BATCH = 200


def attempts_reconcile(*, older_than: timedelta = RECONCILE_AFTER) -> int:
    """Settle attempts whose outcome is unknown or still processing by asking the provider;
    returns how many were settled or called again.

    Found at the provider: record what happened. Not found: no charge exists, so the call is
    made again with the same idempotency key (and snapshot).

    Lock → commit → call, like every charge: each attempt is leased with a conditional UPDATE
    (its own short transaction), the provider is asked with nothing held, and the outcome goes
    through the record step's conditional UPDATE, which a worker or webhook that recorded first
    wins. Bounded: past the task deadline no further attempt is taken (the next beat, two
    minutes on, goes on), so a run stays well inside the broker's visibility timeout.
    """
    settled = 0
    deadline = Deadline()
    now = timezone.now()
    candidates = (
        ChargeAttempt.objects.filter(status__in=UNSETTLED, created_at__lte=now - older_than)
        .filter(Q(reconciling_until__isnull=True) | Q(reconciling_until__lte=now))
        .order_by(F("reconciling_until").asc(nulls_first=True), "pk")
        .values_list("pk", flat=True)
    )
    for done, attempt_id in enumerate(list(candidates[:RECONCILE_BATCH])):
        if done and deadline.passed():
            logger.info("reconcile: deadline reached after %s attempts; the next run goes on", done)
            break
        attempt = _reconcile_lease(attempt_id)
        if attempt is not None:
            settled += _reconcile_one(attempt)
    return settled


def _reconcile_lease(attempt_id) -> ChargeAttempt | None:
    """Take an unsettled attempt for this reconciler: one conditional UPDATE, committed at
    once. None if it settled meanwhile or another reconciler holds it."""
    now = timezone.now()
    lease = now + RECONCILE_LEASE
    taken = (
        ChargeAttempt.objects.filter(pk=attempt_id, status__in=UNSETTLED)
        .filter(Q(reconciling_until__isnull=True) | Q(reconciling_until__lte=now))
        .update(reconciling_until=lease)
    )
    if not taken:
        return None
    return ChargeAttempt.objects.get(pk=attempt_id)


def _reconcile_release(attempt: ChargeAttempt) -> None:
    ChargeAttempt.objects.filter(pk=attempt.pk, reconciling_until=attempt.reconciling_until).update(
        reconciling_until=None
    )


def _reconcile_one(attempt: ChargeAttempt) -> int:
    """Ask the provider about one leased attempt and record or re-call; 1 if it was settled
    or called again. Runs outside any transaction (a caller's would hold its locks across the
    provider's answer)."""
    try:
        if owner_for(attempt.purpose).operation == "refund":
            found = _refund_lookup(attempt)
            if found is not None and found.status == "processing":
                if attempt.status != Status.PROCESSING:
                    attempt_record(attempt=attempt, result=found)
                    return 1
                return 0  # still at the bank: the lease is its wait
        elif attempt.status == Status.PROCESSING and attempt.provider_payment_intent_id:
            found = gateway.payment_intent_retrieve(attempt.provider_payment_intent_id)
            if found.status == "processing":
                return 0  # still at the bank: the lease is its wait
            # requires_action after RECONCILE_AFTER: the customer left the 3-D Secure step;
            # it is recorded as failed.
            if found.status == "requires_action":
                found = _abandoned(found)
        else:
            found = gateway.payment_intent_find(
                customer_id=attempt.provider_customer_id,
                metadata_key="charge_attempt",
                metadata_value=str(attempt.pk),
            )
    except gateway.ProviderError as exc:
        logger.warning(
            "reconcile %s: provider unavailable (%s)", attempt.pk, exc.__class__.__name__
        )
        _reconcile_release(attempt)  # the next run asks again
        return 0
    if found is not None:
        attempt_record(attempt=attempt, result=found)
        return 1
    # No charge exists. Fenced by the lease: the attempt is called again only if it is still
    # unsettled and this reconciler still holds it (a webhook may have recorded meanwhile).
    if not ChargeAttempt.objects.filter(
        pk=attempt.pk,
        status__in=[Status.PENDING, Status.UNKNOWN],
        reconciling_until=attempt.reconciling_until,
    ).update(status=Status.PENDING):
        return 0
    attempt.status = Status.PENDING
    attempt_execute(attempt=attempt)
    return 1


def _refund_lookup(attempt: ChargeAttempt) -> gateway.ChargeResult | None:
    """What the provider holds for a refund attempt: its Refund by id once known, else the
    PaymentIntent's refunds searched for the attempt's marker (None: no refund exists)."""
    if attempt.provider_refund_id:
        return gateway.refund_retrieve(attempt.provider_refund_id)
    return gateway.refund_find(
        payment_intent_id=attempt.provider_payment_intent_id,
        metadata_key="charge_attempt",
        metadata_value=str(attempt.pk),
    )
