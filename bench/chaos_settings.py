"""Settings of bench/chaos.py's processes (its workers, its beat and the bench itself): the
local settings on PostgreSQL and Redis, and every task published twice.

Each task run is also logged with its arguments and outcome ("chaos: start …", "chaos: end
…"), so that bench/chaos.py can tell why a level stayed due: which runs it had and how they
ended.

Used only by bench/chaos.py (DJANGO_SETTINGS_MODULE=bench.chaos_settings); never by the app.
The environment bench/chaos.py gives each process says where the database, the broker and the
provider are (for workers and beat: the bench's cuttable proxies) and how long the visibility
timeout is (CELERY_VISIBILITY_TIMEOUT).

Delivered twice: a `before_task_publish` receiver publishes a copy of every task message (the
same body, the same task id, the same properties) just before the original, marked with a
header so that the copy is not copied again. Every `.delay()`, on-commit dispatch, retry and
beat tick of the run is therefore taken by two worker processes, as a redelivery, a doubled
beat or a re-dispatch would make it happen in production. A copy that cannot be published
(the broker is cut) is logged and dropped: the original then is the only delivery, as on a
day without duplicates.
"""

import json
import logging
import os
from datetime import UTC, datetime

from celery.signals import before_task_publish, task_postrun, task_prerun

from config.settings.local import *  # noqa: F403
from config.settings.local import CELERY_BEAT_SCHEDULE, CELERY_BROKER_TRANSPORT_OPTIONS

DEBUG = False

# kombu looks for messages past their visibility timeout only every ~100 s by default: every
# second here, so a killed worker's message is back one visibility timeout after the kill
# (the run's CELERY_VISIBILITY_TIMEOUT), as config.settings.test does for the real-broker tests.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}

# The smoke mode compresses time: its levels last seconds, so the minute-scale sweepers (due
# charges, due levels, the reconciler, the outboxes) run every CHAOS_BEAT_SECONDS instead.
# The full run keeps production's schedule. The hourly and daily beats are left alone.
_BEAT_SECONDS = os.environ.get("CHAOS_BEAT_SECONDS", "").strip()
if _BEAT_SECONDS:
    CELERY_BEAT_SCHEDULE = {
        name: {**entry, "schedule": float(_BEAT_SECONDS)} if entry["schedule"] <= 120 else entry
        for name, entry in CELERY_BEAT_SCHEDULE.items()
    }

COPY_HEADER = "x-chaos-copy"
# bench/chaos.py --once: a control run, every task published once.
_ONCE = bool(os.environ.get("CHAOS_DELIVER_ONCE"))
_logger = logging.getLogger("bench.chaos")


@before_task_publish.connect(weak=False, dispatch_uid="bench.chaos_settings.deliver_twice")
def _publish_a_copy(
    sender=None, body=None, exchange=None, routing_key=None, headers=None, properties=None,
    declare=None, **kwargs,
):  # fmt: skip
    """Publish the message about to be published once more, with the same task id."""
    if headers is None or headers.get(COPY_HEADER) or _ONCE:
        return  # a copy: never copied again
    from celery import current_app

    app = current_app
    try:
        with app.producer_or_acquire() as producer:
            # The producer's own publish sends no Celery signal: no recursion, whatever the
            # header. retry=False: during a broker cut the copy is dropped at once.
            producer.publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                declare=declare,
                serializer=app.conf.task_serializer,
                compression=app.conf.task_compression,
                headers={**headers, COPY_HEADER: "1"},
                retry=False,
                **dict(properties or {}),
            )
    except Exception as exc:  # the broker is cut: the original alone goes (or fails) as usual
        _logger.warning(
            "chaos: copy of %s[%s] not published (%s)",
            sender,
            headers.get("id"),
            exc.__class__.__name__,
        )


def _now() -> str:
    # An ISO time, not epoch seconds: a long digit run could look like a card number to the
    # log mask (core/cardguard.py).
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@task_prerun.connect(weak=False, dispatch_uid="bench.chaos_settings.log_start")
def _log_start(task_id=None, task=None, args=None, **kwargs):
    _logger.info(
        "chaos: start %s[%s] at=%s args=%s",
        task.name if task else "?",
        task_id,
        _now(),
        json.dumps(list(args or []), default=str),
    )


@task_postrun.connect(weak=False, dispatch_uid="bench.chaos_settings.log_end")
def _log_end(task_id=None, task=None, retval=None, state=None, **kwargs):
    result = retval.__class__.__name__ if isinstance(retval, BaseException) else repr(retval)
    _logger.info(
        "chaos: end %s[%s] at=%s state=%s result=%s",
        task.name if task else "?",
        task_id,
        _now(),
        state,
        result,
    )
