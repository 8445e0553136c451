"""The recurring-lines API for other systems, in billing/api.py's style: django-ninja
operations (mounted by config/api.py) with the same per-space keys, rate limit, body rules and
JSON errors with field errors.

POST /api/v1/recurring-lines                     create (Idempotency-Key honoured)
    {"customer": "0283759" | "id:<our id>",       (required)
     "amount": "49.90", "currency": "EUR",        (amount required; currency: the space's)
     "charge_date": "2026-12-01",                 (required: the first charge date)
     "interval": "monthly" | "weekly" | "yearly" | "cron", "cron": "1 * *",
     "card_lookup_key": "0283759-Mastercard-4242-06/25",  (required: seed 003's key)
     "description": "..."}
GET  /api/v1/recurring-lines/<id>                read one line (a generation)
POST /api/v1/recurring-lines/<id>/pause | resume | cancel

Errors: {"error", "code"} and for 400 "invalid" also "fields". Codes: unauthorized (401),
invalid_json / invalid (400), customer_not_found / not_found (404), method_not_allowed (405),
illegal_transition (409), payload_too_large (413), unsupported_media_type (415),
idempotency_key_reused (422), rate_limited (429).
"""

import logging
import uuid
from datetime import date

from django.core.exceptions import ValidationError
from django.http import JsonResponse
from ninja import Router, Schema
from pydantic import ConfigDict, Field

from billing import api as billing_api
from billing import api_services as billing_api_services
from billing.exceptions import BillingError
from core import money
from core.errors import error_json

from . import api_services, selectors
from .exceptions import IllegalTransition, RecurringError
from .models import RecurringLine

logger = logging.getLogger(__name__)
_error = error_json
invalid_response, answer_response = billing_api.invalid_response, billing_api.answer_response


class RecurringLineCreateForm(billing_api.SpaceJsonForm):
    customer = billing_api.JsonStringField(max_length=100)
    amount = billing_api.JsonStringField(max_length=30, strip=False)
    currency = billing_api.JsonStringField(required=False, max_length=3)
    charge_date = billing_api.JsonStringField(max_length=10)
    interval = billing_api.JsonStringField(required=False, max_length=10)
    cron = billing_api.JsonStringField(required=False, max_length=100)
    card_lookup_key = billing_api.JsonStringField(max_length=120)
    description = billing_api.JsonStringField(required=False, max_length=200)

    def clean_charge_date(self):
        try:
            return date.fromisoformat(self.cleaned_data["charge_date"])
        except ValueError:
            raise ValidationError("Give the date as YYYY-MM-DD.", code="date") from None

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("amount") and cleaned.get("currency"):
            try:
                cleaned["amount_minor"] = money.to_minor(cleaned["amount"], cleaned["currency"])
            except money.MoneyError as exc:
                self.add_error("amount", str(exc))
        return cleaned


class RecurringLineCreate(Schema):
    """A new recurring line (checked by RecurringLineCreateForm)."""

    model_config = ConfigDict(extra="forbid")

    customer: str = Field(max_length=100, description='Your customer number, or "id:<our id>".')
    amount: str = Field(max_length=30, examples=["49.90"])
    currency: str | None = Field(None, max_length=3)
    charge_date: str = Field(max_length=10, description="The first charge date, YYYY-MM-DD.")
    interval: RecurringLine.Interval | None = None
    cron: str | None = Field(None, max_length=100)
    card_lookup_key: str = Field(max_length=120, examples=["0283759-Mastercard-4242-06/25"])
    description: str | None = Field(None, max_length=200)


class CardOut(Schema):
    brand: str
    last4: str
    expiry: str


class RecurringLineOut(Schema):
    id: str
    series: str
    status: RecurringLine.Status
    customer: str
    description: str
    amount_minor: int
    currency: str
    interval: str
    cron: str
    charge_date: str
    card_lookup_key: str
    card: CardOut | None
    generation: int
    next_generation: str | None
    admin_url: str


router = Router(auth=billing_api.ApiKeyAuth(), tags=["recurring lines"])


def _refused(exc: RecurringError, api_key) -> JsonResponse:
    logger.info("recurring api refused: code=%s key=%s", exc.code, api_key.prefix)
    if exc.field:
        return invalid_response({exc.field: [exc.message]})
    status = 409 if isinstance(exc, IllegalTransition) else 422
    return _error(status, exc.code, exc.message)


@router.post(
    "/recurring-lines",
    url_name="line_create",
    summary="Create a recurring line",
    response={201: RecurringLineOut, **billing_api.refusals(400, 404, 413, 415, 422)},
    openapi_extra={
        **billing_api.json_body(RecurringLineCreate),
        "parameters": [billing_api.idempotency_key_header()],
    },
)
def recurring_line_create(request):
    api_key = request.auth
    idempotency_key = billing_api.idempotency_key_of(request)
    if isinstance(idempotency_key, JsonResponse):
        return idempotency_key
    data = billing_api.read_json_body(request)
    if isinstance(data, JsonResponse):
        return data
    try:
        request_hash = billing_api_services.api_request_hash(data)
    except UnicodeEncodeError:
        return _error(400, "invalid_json", "The request body contains text that is not Unicode.")
    try:
        if idempotency_key:
            replay = billing_api_services.api_idempotent_response_get(
                api_key=api_key, key=idempotency_key, request_hash=request_hash
            )
            if replay is not None:
                return answer_response(replay)
        form = RecurringLineCreateForm(data, space=api_key.space)
        errors = form.field_errors()
        if errors:
            return invalid_response(errors)
        cleaned = form.cleaned_data
        customer = billing_api.customer_lookup(api_key.space, cleaned["customer"])
        if customer is None:
            return _error(404, "customer_not_found", "No customer with this number in your space.")
        outcome = api_services.recurring_line_api_create(
            api_key=api_key,
            idempotency_key=idempotency_key or "",
            request_hash=request_hash,
            customer=customer,
            amount_minor=cleaned["amount_minor"],
            currency=cleaned["currency"],
            charge_date=cleaned["charge_date"],
            interval=cleaned["interval"] or RecurringLine.Interval.MONTHLY,
            cron=cleaned["cron"] or "",
            card_lookup_key=cleaned["card_lookup_key"],
            description=cleaned["description"] or "",
        )
    except RecurringError as exc:
        return _refused(exc, api_key)
    except BillingError as exc:  # idempotency_key_reused
        return billing_api.billing_error_response(exc, api_key)
    return answer_response(outcome)


def _line(api_key, line_id: str) -> RecurringLine | None:
    try:
        public_id = uuid.UUID(line_id)
    except ValueError:
        return None
    return selectors.recurring_line_by_public_id(space_id=api_key.space_id, public_id=public_id)


def _not_found():
    return _error(404, "not_found", "No recurring line with this id in your space.")


# The parameter is `id` (a line's public UUID); any other text is a 404 like an unknown id.
@router.get(
    "/recurring-lines/{id}",
    url_name="line_detail",
    summary="Read a recurring line",
    response={200: RecurringLineOut, **billing_api.refusals(404)},
)
def recurring_line_detail(request, id: str):  # noqa: A002 - the URL's parameter name
    line = _line(request.auth, id)
    if line is None:
        return _not_found()
    return JsonResponse(api_services.recurring_line_api_data(line))


def _action(request, id: str, action: str):  # noqa: A002
    api_key = request.auth
    line = _line(api_key, id)
    if line is None:
        return _not_found()
    try:
        outcome = api_services.recurring_line_api_action(api_key=api_key, line=line, action=action)
    except RecurringError as exc:
        return _refused(exc, api_key)
    return answer_response(outcome)


def _action_operation(action: str, summary: str):
    def operation(request, id: str):  # noqa: A002
        return _action(request, id, action)

    operation.__name__ = f"recurring_line_{action}"
    router.post(
        f"/recurring-lines/{{id}}/{action}",
        url_name=f"line_{action}",
        summary=summary,
        response={200: RecurringLineOut, **billing_api.refusals(400, 404, 409, 422)},
    )(operation)


_action_operation("pause", "Pause a recurring line")
_action_operation("resume", "Resume a paused recurring line")
_action_operation("cancel", "Cancel a recurring line")
