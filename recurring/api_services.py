"""The recurring-lines API's writes: an idempotent create and the status changes, each through
recurring.services (audited, naming the API key)."""

import logging

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from billing.api_services import ApiResponse, api_idempotency_claim
from billing.models import ApiKey

from . import services
from .models import RecurringLine

logger = logging.getLogger(__name__)


def recurring_line_api_data(line: RecurringLine) -> dict:
    """What the API answers about a line (and what an idempotent repeat gets again)."""
    customer = line.customer
    following = getattr(line, "next_generation", None) if line.pk else None
    return {
        "id": str(line.public_id),
        "series": str(line.series),
        "status": line.status,
        "customer": customer.external_number or f"id:{customer.pk}",
        "description": line.description,
        "amount_minor": line.amount_minor,
        "currency": line.currency,
        "interval": line.interval,
        "cron": line.cron,
        "charge_date": line.charge_date.isoformat(),
        "card_lookup_key": line.card_lookup_key,
        "card": {"brand": line.card.brand, "last4": line.card.last4, "expiry": line.card.expiry}
        if line.card
        else None,
        "generation": line.generation,
        "next_generation": str(following.public_id) if following else None,
        "admin_url": settings.PUBLIC_BASE_URL.rstrip("/")
        + reverse("admin:recurring_recurringline_change", args=[line.pk]),
    }


def _via(api_key: ApiKey, idempotency_key: str = "") -> dict:
    via = {"api_key": api_key.name, "api_key_prefix": api_key.prefix}
    if idempotency_key:
        via["idempotency_key"] = idempotency_key
    return via


def recurring_line_api_create(
    *, api_key: ApiKey, idempotency_key: str = "", request_hash: str = "", **fields
) -> ApiResponse:
    """Create a line (201). With an Idempotency-Key the key is claimed in the same transaction
    as the line (like billing.api_services.charge_issue_api_start): one key, one line; only the
    201 is stored, so a refused request may be fixed and retried under the same key."""
    with transaction.atomic():
        record, replay = api_idempotency_claim(
            api_key=api_key, key=idempotency_key, request_hash=request_hash
        )
        if replay is not None:
            return replay
        line = services.recurring_line_create(via=_via(api_key, idempotency_key), **fields)
        body = recurring_line_api_data(line)
        if record is not None:
            record.response_body = body
            record.save(update_fields=["response_body"])
    logger.info("recurring line %s created through api key %s", line.pk, api_key.prefix)
    return ApiResponse(201, body)


ACTIONS = {
    "pause": services.recurring_line_pause,
    "resume": services.recurring_line_resume,
    "cancel": services.recurring_line_cancel,
}


def recurring_line_api_action(*, api_key: ApiKey, line: RecurringLine, action: str):
    line = ACTIONS[action](line=line, via=_via(api_key))
    return ApiResponse(200, recurring_line_api_data(line))
