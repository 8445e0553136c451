"""Provider webhooks in: POST /webhooks/stripe.

Verified with the official SDK (signature and a 300 s tolerance), stored once by the event's id
in ProviderEvent and acknowledged at once; a task processes it. A replay (same id) is
acknowledged and not processed again. Failed processing is retried by a beat task with backoff;
after MAX_TRIES the event stays for staff, who can process it again.

Processing is order-independent: payment intents settle attempts through the one record step
(only an unsettled attempt accepts an outcome, and a late "processing" never replaces a final
one); payment method events make cards re-read the method from the provider, so whichever
event comes last, the card ends as the provider has it.
"""

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.errors import error_json
from core.tasks import dispatch, dispatch_due

from . import attempts, gateway
from .models import ProviderEvent
from .signals import provider_event_received

logger = logging.getLogger(__name__)
MAX_TRIES = 6
BACKOFF_BASE = timedelta(minutes=1)

PAYMENT_INTENT_EVENTS = {
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.processing",
}
# Handled by the rooms above (cards) through provider_event_received.
PAYMENT_METHOD_EVENTS = {
    "payment_method.attached",
    "payment_method.detached",
    "payment_method.updated",
    "payment_method.automatically_updated",
}
# Refunds settle their attempts through the same record step: charge.refunded carries the
# charge with its refunds (when the API version lists them), the others one Refund each.
CHARGE_REFUNDED = "charge.refunded"
REFUND_EVENTS = {"charge.refund.updated", "refund.created", "refund.updated", "refund.failed"}


@csrf_exempt
@require_POST
def stripe_webhook(request):
    # The provider sends JSON only: any other body is refused before it is read.
    if (request.content_type or "").lower() != "application/json":
        return error_json(
            400, "bad_body", "Send the event as JSON (Content-Type: application/json)."
        )
    try:
        event = gateway.webhook_event_verify(
            payload=request.body,
            signature_header=request.headers.get("Stripe-Signature", ""),
        )
    except gateway.SignatureError:
        return error_json(400, "bad_signature", "The signature is missing, wrong or too old.")
    except ValueError:
        return error_json(400, "bad_body", "The body is not JSON.")
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and event["id"]
    ):
        return error_json(400, "bad_event", "Not an event.")
    created = provider_event_receive(event=event)
    return JsonResponse({"received": True, "replay": not created})


def provider_event_receive(*, event: dict) -> bool:
    """Store a verified event once by its id and dispatch its processing on commit; False
    for a replay (already stored), which is not processed again."""
    try:
        with transaction.atomic():
            stored = ProviderEvent.objects.create(
                provider_event_id=event["id"][:255], type=event["type"][:100], payload=event
            )
            transaction.on_commit(lambda: _dispatch(stored.pk))
    except IntegrityError:
        return False
    return True


def _dispatch(event_pk: int) -> None:
    from .tasks import provider_event_process

    # On commit of the stored event: a broker outage is logged (the provider still gets its
    # 200, the event is stored) and provider_events_retry sends it within a minute.
    dispatch(provider_event_process, event_pk, mark=ProviderEvent.objects.filter(pk=event_pk))


def backoff(tries: int) -> timedelta:
    return min(BACKOFF_BASE * (2 ** max(tries - 1, 0)), timedelta(hours=2))


def provider_event_process(*, event_pk: int) -> bool:
    """Process one stored event exactly once; True once processed.

    The event row is locked (others skip it) and marked processed in the transaction of the
    changes it causes, so a crash leaves it unprocessed, never half done. A failure is kept
    with the error and tried again later by the beat, with backoff.
    """
    with transaction.atomic():
        event = (
            ProviderEvent.objects.select_for_update(skip_locked=True)
            .filter(pk=event_pk, processed_at__isnull=True)
            .first()
        )
        if event is None:
            return False
        try:
            with transaction.atomic():
                _handle(event.type, (event.payload.get("data") or {}).get("object") or {})
        except Exception as exc:  # any failure is kept on the row and retried
            logger.exception("provider event %s failed", event.provider_event_id)
            tries = event.tries + 1
            ProviderEvent.objects.filter(pk=event.pk).update(
                queued_at=None,  # taken: the beat may send the next try when it is due
                tries=tries,
                last_error=f"{exc.__class__.__name__}: {exc}"[:2000],
                next_try_at=timezone.now() + backoff(tries),
                given_up=tries >= MAX_TRIES,
            )
            return False
        ProviderEvent.objects.filter(pk=event.pk).update(
            processed_at=timezone.now(), tries=F("tries") + 1, last_error="", next_try_at=None
        )
    return True


def _handle(event_type: str, obj: dict) -> None:
    if event_type in PAYMENT_INTENT_EVENTS:
        attempts.attempt_record_from_provider(payment_intent=obj)
    elif event_type in PAYMENT_METHOD_EVENTS:
        provider_event_received.send(sender=ProviderEvent, event_type=event_type, obj=obj)
    elif event_type == CHARGE_REFUNDED:
        for refund in (obj.get("refunds") or {}).get("data") or []:
            if isinstance(refund, dict):
                attempts.attempt_record_refund_from_provider(refund=refund)
    elif event_type in REFUND_EVENTS:
        attempts.attempt_record_refund_from_provider(refund=obj)
    # Anything else: stored and marked processed, nothing to change.


def provider_events_retry() -> int:
    """Beat: dispatch unprocessed events whose next try is due and that have no message queued
    (failed ones with backoff, dispatches that failed, messages the broker lost)."""
    from .tasks import provider_event_process

    now = timezone.now()
    due = ProviderEvent.objects.filter(processed_at__isnull=True, given_up=False).filter(
        Q(next_try_at__lte=now) | Q(next_try_at__isnull=True)
    )
    return dispatch_due(provider_event_process, due, limit=500)


def provider_event_process_again(*, event: ProviderEvent) -> None:
    """Staff: try a given-up (or failing) event again now."""
    ProviderEvent.objects.filter(pk=event.pk, processed_at__isnull=True).update(
        given_up=False, next_try_at=None
    )
    event_pk = event.pk
    transaction.on_commit(lambda: _dispatch(event_pk))
