"""Our signed events out: OutboundEvent rows (written by the services whose change they
report, in the same transaction) delivered by a task that logs every try.

Retries back off exponentially; after MAX_TRIES the event is given up and stays visible to
staff, who can redeliver it. Emails are separate tasks elsewhere: a webhook outage never
re-sends an email, and an email failure never re-sends a webhook.
"""

import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import timedelta

import requests
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from core import outbound
from core.tasks import dispatch, dispatch_due

from .models import DeliveryAttempt, OutboundEvent

logger = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_SECONDS = 10
MAX_TRIES = 8
BACKOFF_BASE = timedelta(seconds=30)
# A delivery task lost with its broker message (or a worker killed mid-delivery) is picked up
# again by the sweeper after this long.
LOST_AFTER = timedelta(minutes=5)


def backoff(tries: int) -> timedelta:
    """30 s, 1 min, 2 min, 4 min, … after the 1st, 2nd, 3rd… failed try (at most ~1 hour)."""
    return min(BACKOFF_BASE * (2 ** max(tries - 1, 0)), timedelta(hours=1))


def outbound_event_create(*, space, type: str, payload: dict, id=None) -> OutboundEvent:
    """Write an event for the space's webhook; call inside the transaction of the change.
    The caller dispatches its delivery on commit (outbound_events_dispatch)."""
    return OutboundEvent.objects.create(
        id=id or uuid.uuid4(), space=space, type=type, payload=payload, url=space.webhook_url
    )


def outbound_events_dispatch(*, ids) -> None:
    """Send each event's delivery (called on commit of the change that wrote them); each is
    marked queued so the sweeper does not send another while it waits. A broker outage is
    logged and the sweeper sends them within a minute."""
    from .tasks import outbound_event_deliver

    for event_id in ids:
        dispatch(
            outbound_event_deliver,
            str(event_id),
            mark=OutboundEvent.objects.filter(pk=event_id),
        )


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, like Stripe's own webhooks (the
    stripe SDK's verifier accepts it)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_post(*, url: str, secret: str, event_type: str, body: bytes) -> requests.Response:
    """The one HTTP call that delivers an event to a space's webhook: signed now, no redirects
    followed. Raises requests.RequestException for errors and non-2xx answers, and
    outbound.UnsafeURL when the URL's host no longer resolves only to public addresses (it was
    checked when saved; a name can be re-pointed at our own network afterwards, so it is
    checked again and the request goes to the address checked)."""
    timestamp = int(time.time())
    response = outbound.public_post(
        url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Backoffice-Event": event_type,
            "X-Backoffice-Signature": webhook_signature(secret, timestamp, body),
        },
        timeout=WEBHOOK_TIMEOUT_SECONDS,
    )
    response.raise_for_status()
    return response


def outbound_event_deliver(*, event_id, force: bool = False) -> bool:
    """Try to deliver one event now and log the try; True once it is delivered.

    Only an undelivered event that is due (or force: staff asked) is tried; the try is claimed
    with a conditional UPDATE first, so two tasks for the same event never post together.
    """
    now = timezone.now()
    events = OutboundEvent.objects.filter(pk=event_id, delivered_at__isnull=True)
    if not force:
        events = events.filter(given_up=False).filter(
            Q(next_try_at__isnull=True) | Q(next_try_at__lte=now)
        )
    # The lease: a worker killed mid-try leaves next_try_at in the future, then the sweeper.
    # The message is taken: queued_at is cleared, so the sweeper may send the next try's.
    claimed = events.update(
        tries=F("tries") + 1, next_try_at=now + LOST_AFTER, given_up=False, queued_at=None
    )
    if not claimed:
        return False
    event = OutboundEvent.objects.select_related("space").get(pk=event_id)
    body = json.dumps(event.payload, separators=(",", ":")).encode()
    started = time.monotonic()
    status_code, error, unsafe = None, "", False
    try:
        response = webhook_post(
            url=event.url, secret=event.space.webhook_secret, event_type=event.type, body=body
        )
        status_code = response.status_code
    except outbound.UnsafeURL as exc:
        # Not sent at all. Retrying cannot help until staff fix the URL: give up at once (the
        # event stays visible with the reason, and can be redelivered after the fix).
        error, unsafe = f"refused: {exc.code}", True
    except requests.RequestException as exc:
        response = getattr(exc, "response", None)
        status_code = response.status_code if response is not None else None
        error = f"{exc.__class__.__name__}: {exc}"[:300]
    latency_ms = int((time.monotonic() - started) * 1000)
    succeeded = not error
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            event=event,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            succeeded=succeeded,
        )
        if succeeded:
            OutboundEvent.objects.filter(pk=event.pk).update(
                delivered_at=timezone.now(), next_try_at=None
            )
        else:
            given_up = unsafe or event.tries >= MAX_TRIES
            OutboundEvent.objects.filter(pk=event.pk).update(
                next_try_at=None if given_up else timezone.now() + backoff(event.tries),
                given_up=given_up,
            )
    if not succeeded:
        logger.warning("outbound event %s try %s failed: %s", event.pk, event.tries, error)
    return succeeded


def outbound_event_redeliver(*, event: OutboundEvent) -> None:
    """Staff: deliver again now (also a given-up or already delivered event)."""
    OutboundEvent.objects.filter(pk=event.pk).update(
        delivered_at=None, given_up=False, next_try_at=None
    )
    transaction.on_commit(lambda: outbound_events_dispatch(ids=[event.pk]))


def outbound_events_sweep() -> int:
    """Beat: dispatch every undelivered event whose next try is due and that has no message
    queued (retries with backoff, dispatches that failed, messages the broker lost)."""
    from .tasks import outbound_event_deliver

    now = timezone.now()
    due = OutboundEvent.objects.filter(delivered_at__isnull=True, given_up=False).filter(
        Q(next_try_at__isnull=True) | Q(next_try_at__lte=now)
    )
    return dispatch_due(outbound_event_deliver, due, limit=500, arg=str)
