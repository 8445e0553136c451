from celery import shared_task

from . import attempts, outbox, webhooks


@shared_task(name="payments.charge_attempts_reconcile")
def charge_attempts_reconcile() -> int:
    return attempts.attempts_reconcile()


@shared_task(name="payments.outbound_event_deliver")
def outbound_event_deliver(event_id: str) -> bool:
    # A failed delivery is not a Celery retry: the try is logged and its next one scheduled in
    # the row, and the beat sweeper dispatches it when due (backoff lives in the database). Only
    # a database or broker error is retried by Celery, like every task's (core.tasks).
    return outbox.outbound_event_deliver(event_id=event_id)


@shared_task(name="payments.outbound_events_sweep")
def outbound_events_sweep() -> int:
    return outbox.outbound_events_sweep()


@shared_task(name="payments.provider_event_process")
def provider_event_process(event_pk: int) -> bool:
    return webhooks.provider_event_process(event_pk=event_pk)


@shared_task(name="payments.provider_events_retry")
def provider_events_retry() -> int:
    return webhooks.provider_events_retry()
