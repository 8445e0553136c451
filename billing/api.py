"""The charging API for other systems (ERP, shop): JSON over HTTPS with a per-space key.

POST /api/v1/charge-issues
    Authorization: Bearer bo_<prefix>_<secret>      (a key made in the admin, API keys)
    Idempotency-Key: <up to 255 characters>         (optional; a UUID per intended issue)
    {"customer": "0283759" | "id:<our id>",         (required)
     "amount": "12.34",                             (optional, see below)
     "currency": "EUR",                             (optional, default: the space's)
     "notification_subject": "...", "notification_body": "...",
     "reference": "<up to 100 characters>"}

`amount` is only a proposal: the issue starts at "1. charge amount entry" with it filled in,
and a clerk confirms it there and another person approves it, as for any other issue. See
api_services.charge_issue_api_start, which also explains which answers are replayed for a
repeated Idempotency-Key (only the 201).

The body is JSON (Content-Type: application/json, UTF-8) of at most MAX_BODY_BYTES. `amount`
follows the admin's rule (core.money.to_minor): plain decimal text in ASCII digits with no
spaces around it, at least the provider's minimum charge for the currency (0.50 EUR, 50 JPY,
...) and at most the space's maximum.

Answers are JSON. Errors are {"error": <user-safe message>, "code": <stable code>} and, for
400 "invalid", "fields": {<field>: [<message>, ...]}. Codes: unauthorized (401),
invalid_json / invalid (400), customer_not_found (404), method_not_allowed (405), no_card (409),
payload_too_large (413), unsupported_media_type (415), idempotency_key_reused (422),
rate_limited (429); not_found (404) and server_error (500) come from config.views.
"""

import hmac
import json
import logging

from django import forms
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from cards.models import Customer
from core import money
from core.errors import domain_error_json, error_json
from core.logging import log_context_bind
from core.ratelimit import attempt_allowed

from . import api_services
from .exceptions import BillingError, InvalidAmount
from .models import ApiKey

logger = logging.getLogger(__name__)

# Per key; far above what an ERP batch needs, low enough to stop a client stuck in a loop.
RATE_LIMIT = 300
RATE_WINDOW_SECONDS = 60

# A start is a few hundred bytes; this leaves room for long notification texts. Bodies above
# Django's DATA_UPLOAD_MAX_MEMORY_SIZE never get here: reading them raises RequestDataTooBig,
# which config.views.bad_request answers with the same JSON 413.
MAX_BODY_BYTES = 256 * 1024

_STATUS_FOR_CODE = {
    "customer_not_found": 404,
    "not_allowed": 403,
    "no_card": 409,
    "idempotency_key_reused": 422,
}


class JsonStringField(forms.CharField):
    """Accepts JSON strings (or null) only: a number or list is refused, not turned into text."""

    def to_python(self, value):
        if value is not None and not isinstance(value, str):
            raise ValidationError("Must be a string.", code="type")
        return super().to_python(value)


class SpaceJsonForm(forms.Form):
    """A JSON body's fields for one space: its default currency, and errors per field
    (unknown fields included). The API's create forms build on it."""

    def __init__(self, data, *, space):
        super().__init__(data)
        self.space = space

    def clean_currency(self):
        currency = (self.cleaned_data["currency"] or self.space.default_currency).upper()
        if currency not in money.CURRENCIES:
            raise ValidationError(f"{currency} is not a currency we charge in.", code="currency")
        return currency

    def field_errors(self) -> dict[str, list[str]]:
        """{field: [message, ...]}, including fields the API does not know (likely typos, which
        would otherwise be dropped without a word)."""
        errors = {
            field: [error["message"] for error in field_errors]
            for field, field_errors in self.errors.get_json_data().items()
        }
        for name in sorted(set(self.data) - set(self.fields)):
            errors[name] = ["Unknown field."]
        return errors


class ChargeIssueCreateForm(SpaceJsonForm):
    customer = JsonStringField(max_length=100)
    # Not stripped: " 12.50" is refused like in the admin (money.to_minor), not silently fixed.
    amount = JsonStringField(required=False, max_length=30, strip=False)
    currency = JsonStringField(required=False, max_length=3)
    notification_subject = JsonStringField(required=False, max_length=200)
    notification_body = JsonStringField(required=False)
    reference = JsonStringField(required=False, max_length=100)

    def clean(self):
        cleaned = super().clean()
        # Checked here as well as in the service, so one answer lists every field's problem.
        if cleaned.get("amount") and cleaned.get("currency"):
            try:
                api_services.api_amount_minor(
                    cleaned["amount"], cleaned["currency"], space=self.space
                )
            except InvalidAmount as exc:
                self.add_error("amount", exc.message)
        return cleaned


def invalid_response(fields: dict[str, list[str]]) -> JsonResponse:
    return error_json(400, "invalid", "Invalid request", fields=fields)


def _unauthorized(message: str, *, invalid_token: bool = False) -> JsonResponse:
    response = error_json(401, "unauthorized", message)
    challenge = 'Bearer realm="api"'
    if invalid_token:
        challenge += ', error="invalid_token"'
    response["WWW-Authenticate"] = challenge
    return response


def billing_error_response(exc: BillingError, api_key: ApiKey) -> JsonResponse:
    logger.info("api refused: code=%s key=%s", exc.code, api_key.prefix)
    return domain_error_json(exc, status=_STATUS_FOR_CODE.get(exc.code, 422))


def answer_response(outcome: api_services.ApiResponse) -> JsonResponse:
    response = JsonResponse(outcome.body, status=outcome.status)
    if outcome.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def authenticate(request) -> ApiKey | JsonResponse:
    """The request's active ApiKey, or the 401 to answer."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    match = api_services.KEY_FORMAT.fullmatch(token)
    api_key = (
        ApiKey.objects.select_related("space").filter(prefix=match["prefix"]).first()
        if match
        else None
    )
    if api_key is None or not hmac.compare_digest(api_key.key_hash, ApiKey.hash(token)):
        return _unauthorized("This API key is not valid.", invalid_token=True)
    if api_key.revoked_at is not None:
        return _unauthorized("This API key has been revoked.", invalid_token=True)
    return api_key


def body_refusal(request) -> JsonResponse | None:
    """415 unless the body is declared as JSON in UTF-8; 413 when it is over MAX_BODY_BYTES
    (judged by Content-Length before the body is read, and by what was read)."""
    content_type = (request.content_type or "").lower()
    charset = request.content_params.get("charset", "utf-8").lower()
    if content_type != "application/json" or charset not in ("utf-8", "utf8"):
        return error_json(
            415,
            "unsupported_media_type",
            "Send the body as JSON in UTF-8, with Content-Type: application/json.",
        )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES or len(request.body) > MAX_BODY_BYTES:
        return error_json(
            413,
            "payload_too_large",
            f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB.",
        )
    return None


def json_object(request) -> dict | str:
    """The body as a JSON object, or why it is not one (a user-safe message)."""
    try:
        data = json.loads(request.body)
    except (ValueError, RecursionError):
        return "The request body must be JSON (Content-Type: application/json)."
    if not isinstance(data, dict):
        return 'The request body must be a JSON object, e.g. {"customer": "C-1001"}.'
    return data


def customer_lookup(space, identifier: str) -> Customer | None:
    customers = Customer.objects.filter(space=space)
    if identifier.startswith("id:"):
        pk = identifier.removeprefix("id:")
        # Bounded so a huge number cannot overflow the bigint lookup.
        if not (pk.isascii() and pk.isdigit() and len(pk) <= 18):
            return None
        return customers.filter(pk=int(pk)).first()
    return customers.filter(external_number=identifier).first()


def api_request_guard(request, *, allow: str, what: str) -> ApiKey | JsonResponse:
    """Method, API key and the key's rate limit, in that order: the request's ApiKey, or the
    answer to give instead."""
    if request.method != allow:
        response = error_json(405, "method_not_allowed", f"Use {allow} to {what}.")
        response["Allow"] = allow
        return response
    api_key = authenticate(request)
    if isinstance(api_key, JsonResponse):
        return api_key
    log_context_bind(space=api_key.space_id)
    allowed, retry_after = attempt_allowed(
        scope="billing-api", key=str(api_key.pk), limit=RATE_LIMIT, window=RATE_WINDOW_SECONDS
    )
    if not allowed:
        response = error_json(429, "rate_limited", "Too many requests with this key; slow down.")
        response["Retry-After"] = str(retry_after)
        return response
    return api_key


@csrf_exempt
def charge_issue_create(request):
    """Start a charging issue for one of the key's space's customers (see the module doc)."""
    api_key = api_request_guard(request, allow="POST", what="start a charging issue")
    if isinstance(api_key, JsonResponse):
        return api_key

    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not (
        0 < len(idempotency_key) <= 255 and idempotency_key.isprintable()
    ):
        return invalid_response(
            {"Idempotency-Key": ["Send 1 to 255 printable characters, e.g. a UUID."]}
        )

    refusal = body_refusal(request)
    if refusal is not None:
        return refusal
    data = json_object(request)
    if isinstance(data, str):
        return error_json(400, "invalid_json", data)
    try:
        request_hash = api_services.api_request_hash(data)
    except UnicodeEncodeError:
        return error_json(
            400, "invalid_json", "The request body contains text that is not Unicode."
        )

    try:
        if idempotency_key:
            replay = api_services.api_idempotent_response_get(
                api_key=api_key, key=idempotency_key, request_hash=request_hash
            )
            if replay is not None:
                return answer_response(replay)

        form = ChargeIssueCreateForm(data, space=api_key.space)
        errors = form.field_errors()
        if errors:
            return invalid_response(errors)
        customer = customer_lookup(api_key.space, form.cleaned_data["customer"])
        if customer is None:
            return error_json(
                404, "customer_not_found", "No customer with this number in your space."
            )

        outcome = api_services.charge_issue_api_start(
            api_key=api_key,
            customer=customer,
            amount=form.cleaned_data["amount"],
            currency=form.cleaned_data["currency"],
            reference=form.cleaned_data["reference"],
            notification_subject=form.cleaned_data["notification_subject"],
            notification_body=form.cleaned_data["notification_body"],
            idempotency_key=idempotency_key or "",
            request_hash=request_hash,
        )
    except InvalidAmount as exc:
        return invalid_response({"amount": [exc.message]})
    except BillingError as exc:
        return billing_error_response(exc, api_key)
    return answer_response(outcome)
