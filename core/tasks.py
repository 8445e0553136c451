"""How every task is retried and how work is handed to the broker, declared once.

- `BackofficeTask` is the Celery app's task class (config/celery.py), so every task, a new one
  included, retries a database or broker error with exponential backoff instead of failing and
  being acknowledged (acks late would otherwise drop it). Retrying is safe because every task
  is idempotent by design: a money task's begin claims only an owner in its due state and moves
  it out of that state in the same transaction as the attempt row (payments/attempts.py), so a
  retried copy finds nothing due and calls nobody; outbox rows and events are claimed with a
  conditional UPDATE; emails are sent only after their reads succeeded.
- `dispatch`, what every on-commit callback sends its task with: a broker that is down when
  committed work is handed over is logged with the task and its ids and swallowed, never raised
  into the request or task that committed the change; the beat sweeper that covers that work
  sends it again.
- `queued_at` markers (`dispatch_due`): a sweeper re-sends a due row only when no message for
  it is queued and unclaimed, so stopped workers leave at most one message per due row on the
  broker, however many beats pass.
- `Deadline`: loops that run inside one task stop well within the broker's visibility timeout.
"""

import logging
import smtplib
import time
from datetime import timedelta

import kombu.exceptions
import redis.exceptions
from celery import Task
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)

# A broker that cannot be reached: kombu raises its OperationalError once its publish retries
# are spent (redis-py's own errors are listed should one come through unwrapped). Deliberately
# not OSError: with tasks run inline (tests) a task's own error must not pass for the broker's.
BROKER_ERRORS = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
# What a task retries: the database or the broker gone for a moment, or a mail server that did
# not answer (smtplib's errors are OSErrors; OSError also covers sockets). A bug (any other
# exception) is not retried: it fails once, loudly.
TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    *BROKER_ERRORS,
    smtplib.SMTPException,
    OSError,
)


class BackofficeTask(Task):
    """The base of every task (config/celery.py sets it as the app's task class, so
    `shared_task` uses it): transient errors are retried with exponential backoff and full
    jitter (up to 1, 2, 4 … 120 s), 8 times, about ten minutes in all; then the task fails.
    A task may narrow or widen `autoretry_for` in its decorator."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = True
    # Kept far below the broker's visibility timeout: a retry is a message with an ETA, which
    # Redis would hand to a second worker if it waited longer than that timeout.
    retry_backoff_max = 120
    retry_jitter = True
    max_retries = 8


# --- Dispatch ---------------------------------------------------------------------------------


def requeue_after() -> timedelta:
    """How long a row marked queued is not sent again. A published message waits in the queue
    until a worker takes it, however long that is; one taken by a worker that dies comes back
    after the visibility timeout. Only a message the broker itself lost needs sending again, so
    the mark lasts past the visibility timeout (with a margin): workers stopped for ten minutes
    leave one message per due row, not one per beat."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    return timedelta(seconds=visibility) + timedelta(minutes=5)


def dispatch(task, *args, mark: QuerySet | None = None, release: dict | None = None) -> bool:
    """Send `task(*args)` now; True if the broker took it.

    `mark`: the rows (with a `queued_at` column) this message is for; they are marked queued
    before the message is sent, so a sweeper does not send another while it waits. A broker
    error is logged with the task and its arguments (ids) and swallowed: the rows are unmarked
    (and `release`'s fields reset, e.g. a lease) so the next beat sends them, within a minute.
    """
    stamp = None
    if mark is not None:
        stamp = timezone.now()
        try:
            mark.update(queued_at=stamp)
        except DatabaseError:
            # Sent unmarked: at worst a sweeper sends a second message, which finds the work
            # done or claimed.
            logger.warning("dispatch of %s%s: not marked queued", task.name, args, exc_info=True)
            stamp = None
    try:
        task.delay(*args)
    except BROKER_ERRORS as exc:
        logger.error(
            "dispatch of %s%s failed, the broker is unavailable (%s: %s); the beat sweeper "
            "sends it again",
            task.name,
            args,
            exc.__class__.__name__,
            exc,
        )
        if stamp is not None:
            try:
                mark.filter(queued_at=stamp).update(queued_at=None, **(release or {}))
            except DatabaseError:
                logger.warning("dispatch of %s%s: mark kept", task.name, args, exc_info=True)
        return False
    return True


def dispatch_due(
    task, due: QuerySet, *, limit: int, release: dict | None = None, arg=lambda pk: pk
) -> int:
    """A sweeper's send: the rows of `due` with no message queued and unclaimed (never marked,
    or marked longer than requeue_after() ago) are marked queued and sent, one message each
    with the row's id (through `arg`); returns how many were sent.

    The rows are picked with FOR UPDATE SKIP LOCKED and marked in one transaction, so two beats
    at once never both send a row; the messages go out after that commit. If the broker fails,
    the rows not sent are unmarked for the next beat and this run stops."""
    now = timezone.now()
    model = due.model
    with transaction.atomic():
        ids = list(
            due.filter(Q(queued_at__isnull=True) | Q(queued_at__lte=now - requeue_after()))
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        model.objects.filter(pk__in=ids).update(queued_at=now)
    for sent, pk in enumerate(ids):
        try:
            task.delay(arg(pk))
        except BROKER_ERRORS as exc:
            logger.error(
                "sweep of %s stopped after %s of %s: the broker is unavailable (%s: %s)",
                task.name,
                sent,
                len(ids),
                exc.__class__.__name__,
                exc,
            )
            model.objects.filter(pk__in=ids[sent:], queued_at=now).update(
                queued_at=None, **(release or {})
            )
            return sent
    return len(ids)


# --- Bounded loops ----------------------------------------------------------------------------


class Deadline:
    """The end of a task's loop: TASK_DEADLINE_SECONDS (60 s by default, a tenth of the
    visibility timeout) from now. A loop checks `passed()` before each further item, so it always
    makes progress and lasts at most the deadline plus one item (one item's provider calls are
    bounded by STRIPE_TIMEOUT_SECONDS), then leaves the rest to the next run."""

    def __init__(self, seconds: float | None = None):
        if seconds is None:
            seconds = settings.TASK_DEADLINE_SECONDS
        self.seconds = seconds
        self._ends = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self._ends
