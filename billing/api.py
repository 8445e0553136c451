"""The charging API for other systems (ERP, shop): JSON over HTTPS with a per-space key, as
django-ninja operations (config/api.py mounts them at /api/v1/ with the schema at
/api/v1/openapi.json and the docs at /api/v1/docs).

Authorization: Bearer bo_<prefix>_<secret>          (a key made in the admin, API keys)

POST /api/v1/charge-issues                  start an issue (Idempotency-Key honoured)
    Idempotency-Key: <up to 255 characters>         (optional; a UUID per intended issue)
    {"customer": "0283759" | "id:<our id>",         (required)
     "amount": "12.34",                             (optional, see below)
     "currency": "EUR",                             (optional, default: the space's)
     "notification_subject": "...", "notification_body": "...",
     "reference": "<up to 100 characters>"}
GET  /api/v1/charge-issues                  list, newest first: ?state= &customer= &reference=
                                            &created_after= &created_before= &limit= &cursor=
GET  /api/v1/charge-issues/<id>             read one
POST /api/v1/charge-issues/<id>/cancel      cancel (audited, naming the key)
GET  /api/v1/charge-issues/<id>/events      its audit trail, oldest first

A key sees only its own space's issues: another space's id is a 404 like a missing one.

`amount` is only a proposal: the issue starts at "1. charge amount entry" with it filled in,
and a clerk confirms it there and another person approves it, as for any other issue. See
api_services.charge_issue_api_start, which also explains which answers are replayed for a
repeated Idempotency-Key (only the 201), and what a "live" charge is (one per reference).

The body is JSON (Content-Type: application/json, UTF-8) of at most MAX_BODY_BYTES. `amount`
follows the admin's rule (core.money.to_minor): plain decimal text in ASCII digits with no
spaces around it, at least the provider's minimum charge for the currency (0.50 EUR, 50 JPY,
...) and at most the space's maximum. Bodies are checked by the Django forms below (so one
answer lists every field's problem, unknown fields included); the schema documents them.

Answers are JSON. Errors are {"error": <user-safe message>, "code": <stable code>} and, for
400 "invalid", "fields": {<field>: [<message>, ...]} (query parameters too). Codes:
unauthorized (401), invalid_json / invalid (400), customer_not_found / not_found (404),
method_not_allowed (405), no_card / illegal_transition / reference_in_use (409, the last with
"existing_id"), payload_too_large (413), unsupported_media_type (415), idempotency_key_reused
(422), rate_limited (429); server_error (500) comes from config.views.
"""

import hmac
import json
import logging
from datetime import datetime
from typing import Annotated

from django import forms
from django.core import signing
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from ninja import Path, Query, Router
from ninja.security import HttpBearer

from cards.models import Customer
from core import money
from core.errors import error_json
from core.logging import log_context_bind
from core.ratelimit import attempt_allowed

from . import api_services, selectors
from .api_schemas import (
    MAX_ID,
    ChargeIssueCreate,
    ChargeIssueEventList,
    ChargeIssueFilters,
    ChargeIssueOut,
    ChargeIssuePage,
    Error,
)
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
    "not_found": 404,
    "not_allowed": 403,
    "no_card": 409,
    "illegal_transition": 409,
    "reference_in_use": 409,
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
    existing_id = getattr(exc, "existing_id", None)
    extra = {"existing_id": existing_id} if existing_id is not None else {}
    return error_json(_STATUS_FOR_CODE.get(exc.code, 422), exc.code, exc.message, **extra)


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


# --- The operations ---------------------------------------------------------------------------


class ApiRefused(Exception):
    """An answer decided before an operation runs (401, 429); config.api answers with it."""

    def __init__(self, response: JsonResponse):
        super().__init__(response.status_code)
        self.response = response


class ApiKeyAuth(HttpBearer):
    """The space's API key as a Bearer token, then the key's rate limit: request.auth is the
    ApiKey. Refusals are raised (ApiRefused) so each keeps its own message and headers."""

    def __call__(self, request):
        # Our own header parsing (authenticate() above), not HttpBearer's: a missing or
        # malformed header gets our message in the one error shape, not ninja's bare 401.
        return self.authenticate(request, token=None)

    def authenticate(self, request, token):
        api_key = authenticate(request)
        if isinstance(api_key, JsonResponse):
            raise ApiRefused(api_key)
        log_context_bind(space=api_key.space_id)
        allowed, retry_after = attempt_allowed(
            scope="billing-api", key=str(api_key.pk), limit=RATE_LIMIT, window=RATE_WINDOW_SECONDS
        )
        if not allowed:
            response = error_json(
                429, "rate_limited", "Too many requests with this key; slow down."
            )
            response["Retry-After"] = str(retry_after)
            raise ApiRefused(response)
        return api_key


def refusals(*statuses: int) -> dict:
    """The operation's documented error answers, all in the one error shape."""
    return dict.fromkeys((401, 429, *statuses), Error)


def json_body(schema) -> dict:
    """openapi_extra documenting a required JSON body (validated by the forms, not by ninja),
    its enums inlined: pydantic's "#/$defs/..." references mean nothing inside the OpenAPI
    document."""
    body = schema.model_json_schema()
    definitions = body.pop("$defs", {})
    for field in body["properties"].values():
        for option in (field, *field.get("anyOf", ())):
            ref = option.pop("$ref", None)
            if ref is not None:
                option.update(definitions[ref.rsplit("/", 1)[-1]])
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def idempotency_key_header() -> dict:
    return {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "description": "1 to 255 printable characters (e.g. a UUID): a repeat with the same key "
        "and body replays the first 201 (with Idempotent-Replayed: true).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }


def read_json_body(request) -> dict | JsonResponse:
    """The body as a JSON object, after the media type and size checks: the dict, or the
    refusal to answer (415, 413, 400 invalid_json)."""
    refusal = body_refusal(request)
    if refusal is not None:
        return refusal
    data = json_object(request)
    if isinstance(data, str):
        return error_json(400, "invalid_json", data)
    return data


def idempotency_key_of(request) -> str | None | JsonResponse:
    """The request's Idempotency-Key (None without one), or the 400 for a malformed one."""
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not (
        0 < len(idempotency_key) <= 255 and idempotency_key.isprintable()
    ):
        return invalid_response(
            {"Idempotency-Key": ["Send 1 to 255 printable characters, e.g. a UUID."]}
        )
    return idempotency_key


router = Router(auth=ApiKeyAuth(), tags=["charge issues"])


IssueId = Annotated[int, Path(ge=1, le=MAX_ID, description="The issue's id (a start's `id`).")]


def _issue_not_found() -> JsonResponse:
    return error_json(404, "not_found", "No charging issue with this id in your space.")


@router.post(
    "/charge-issues",
    url_name="charge_issue_create",
    summary="Start a charging issue",
    response={201: ChargeIssueOut, **refusals(400, 404, 409, 413, 415, 422)},
    openapi_extra={**json_body(ChargeIssueCreate), "parameters": [idempotency_key_header()]},
)
def charge_issue_create(request):
    """Start a charging issue for one of the key's space's customers, at "1. charge amount
    entry" (see the module doc). A live charge with the same `reference` is a 409 naming it."""
    api_key = request.auth
    idempotency_key = idempotency_key_of(request)
    if isinstance(idempotency_key, JsonResponse):
        return idempotency_key
    data = read_json_body(request)
    if isinstance(data, JsonResponse):
        return data
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


# The cursor is opaque to clients: the last row's (created_at, id), signed so that a client
# cannot hand us something we did not give out.
_CURSOR_SALT = "billing.api.charge-issues.cursor"


def _cursor_dump(issue) -> str:
    return signing.dumps([issue.created_at.isoformat(), issue.pk], salt=_CURSOR_SALT)


def _cursor_load(cursor: str):
    try:
        created_at, pk = signing.loads(cursor, salt=_CURSOR_SALT)
        return datetime.fromisoformat(created_at), int(pk)
    except (signing.BadSignature, ValueError, TypeError):
        return None


@router.get(
    "/charge-issues",
    summary="List charging issues",
    response={200: ChargeIssuePage, **refusals(400)},
)
def charge_issue_list(request, filters: Query[ChargeIssueFilters]):
    """The key's space's issues, newest first (created_at, then id), `limit` per page. Paging
    by `next_cursor` is stable while issues are added: new ones come before the first page,
    never between pages. An unknown `customer` matches nothing."""
    api_key = request.auth
    after = None
    if filters.cursor is not None:
        after = _cursor_load(filters.cursor)
        if after is None:
            return invalid_response({"cursor": ["Send a next_cursor from an earlier page."]})
    customer_id = None
    if filters.customer is not None:
        customer = customer_lookup(api_key.space, filters.customer)
        customer_id = customer.pk if customer is not None else 0
    issues = list(
        selectors.charge_issue_api_list(
            space_id=api_key.space_id,
            state=filters.state,
            customer_id=customer_id,
            reference=filters.reference,
            created_after=filters.created_after,
            created_before=filters.created_before,
            after=after,
        )[: filters.limit + 1]
    )
    page, more = issues[: filters.limit], len(issues) > filters.limit
    return JsonResponse(
        {
            "data": [api_services.charge_issue_api_data(issue) for issue in page],
            "next_cursor": _cursor_dump(page[-1]) if more else None,
        }
    )


@router.get(
    "/charge-issues/{id}",
    url_name="charge_issue_detail",
    summary="Read a charging issue",
    response={200: ChargeIssueOut, **refusals(400, 404)},
)
def charge_issue_detail(request, id: IssueId):  # noqa: A002 - the URL's parameter name
    issue = selectors.charge_issue_api_get(space_id=request.auth.space_id, pk=id)
    if issue is None:
        return _issue_not_found()
    return JsonResponse(api_services.charge_issue_api_data(issue))


@router.post(
    "/charge-issues/{id}/cancel",
    url_name="charge_issue_cancel",
    summary="Cancel a charging issue",
    description="Allowed until the charge is made: awaiting amount entry, returned, awaiting "
    "approval or approved. Any other state is a 409 (a charge being collected is cancelled "
    "with its collection, in the back office).",
    response={200: ChargeIssueOut, **refusals(400, 404, 409)},
)
def charge_issue_cancel(request, id: IssueId):  # noqa: A002
    api_key = request.auth
    issue = selectors.charge_issue_api_get(space_id=api_key.space_id, pk=id)
    if issue is None:
        return _issue_not_found()
    try:
        outcome = api_services.charge_issue_api_cancel(api_key=api_key, issue=issue)
    except BillingError as exc:
        return billing_error_response(exc, api_key)
    return answer_response(outcome)


@router.get(
    "/charge-issues/{id}/events",
    url_name="charge_issue_events",
    summary="A charging issue's events",
    response={200: ChargeIssueEventList, **refusals(400, 404)},
)
def charge_issue_events(request, id: IssueId):  # noqa: A002
    issue = selectors.charge_issue_api_get(space_id=request.auth.space_id, pk=id)
    if issue is None:
        return _issue_not_found()
    events = selectors.charge_issue_event_list(issue_id=issue.pk)
    return JsonResponse(
        {
            "data": [
                {
                    "id": event.pk,
                    "action": event.action,
                    "from_state": event.from_state,
                    "to_state": event.to_state,
                    "comment": event.comment,
                    "created_at": event.created_at.isoformat(),
                }
                for event in events
            ]
        }
    )
