"""Writes for the charging API: keys for other systems, and the idempotent start of an issue."""

import hashlib
import json
import logging
import re
import secrets
import string
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from cards.models import Customer
from core import money
from core.history import history_acting
from core.logging import log_context_bind
from spaces.models import Space
from spaces.selectors import user_may_act_in_space

from . import services
from .exceptions import BillingError, InvalidAmount, NotAllowed, ReferenceInUse
from .models import LIVE_STATES, ApiIdempotencyRecord, ApiKey, ApiKeyEvent, ChargeIssue

logger = logging.getLogger(__name__)

# `bo_<prefix>_<secret>`: the prefix finds the row (and is shown in the admin), the secret is
# 256 random bits. The prefix has no "_" so the key splits unambiguously.
KEY_FORMAT = re.compile(r"bo_(?P<prefix>[A-Za-z0-9]{8})_[A-Za-z0-9_-]{43}")
_PREFIX_ALPHABET = string.ascii_letters + string.digits


class IdempotencyKeyReused(BillingError):
    code = "idempotency_key_reused"
    message = (
        "This Idempotency-Key was already used with a different request body. "
        "Send a new key for a new request."
    )


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict
    replayed: bool = False


# --- Keys -------------------------------------------------------------------------------------


def _require_key_admin(user, permission: str, space_id: int) -> None:
    if not user_may_act_in_space(user=user, permission=permission, space_id=space_id):
        raise NotAllowed()


def api_key_create(*, space: Space, name: str, acting_user) -> tuple[ApiKey, str]:
    """A new key for `space`. The full key is returned this once; only its SHA-256 is kept.
    Audited (ApiKeyEvent) in the same transaction."""
    _require_key_admin(acting_user, "billing.add_apikey", space.pk)
    for _ in range(3):
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
        full_key = f"bo_{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic(), history_acting(acting_user):
                api_key = ApiKey.objects.create(
                    space=space,
                    name=name,
                    prefix=prefix,
                    key_hash=ApiKey.hash(full_key),
                    created_by=acting_user,
                )
                ApiKeyEvent.objects.create(
                    api_key=api_key, action=ApiKeyEvent.Action.CREATED, actor=acting_user
                )
        except IntegrityError:
            continue  # the unique prefix was taken (1 in 62**8 per key): draw another
        logger.info("api key %s created for space %s by user %s", prefix, space.pk, acting_user.pk)
        return api_key, full_key
    raise BillingError("No free key prefix was found; please try again.", code="api_key_prefix")


def api_key_revoke(*, api_key: ApiKey, acting_user) -> ApiKey:
    """Refuse the key from now on. Final (make a new key instead); revoking twice is a no-op.
    Audited (ApiKeyEvent) in the same transaction."""
    _require_key_admin(acting_user, "billing.change_apikey", api_key.space_id)
    with transaction.atomic():
        api_key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if api_key.revoked_at is None:
            api_key.revoked_at = timezone.now()
            api_key._history_user = acting_user
            api_key.save(update_fields=["revoked_at"])
            ApiKeyEvent.objects.create(
                api_key=api_key, action=ApiKeyEvent.Action.REVOKED, actor=acting_user
            )
            logger.info("api key %s revoked by user %s", api_key.prefix, acting_user.pk)
    return api_key


# --- Idempotency ------------------------------------------------------------------------------


def api_request_hash(data) -> str:
    """SHA-256 of the parsed body in canonical form (sorted keys, no spaces), so key order and
    whitespace do not make a retry look like a different request. Raises UnicodeEncodeError
    for text that is not valid Unicode (a lone surrogate), which the database would refuse."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def api_idempotent_response_get(
    *, api_key: ApiKey, key: str, request_hash: str
) -> ApiResponse | None:
    """The stored answer to an earlier request with this key, or None. Raises
    IdempotencyKeyReused when the earlier request had a different body."""
    record = ApiIdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused()
    return ApiResponse(record.response_status, record.response_body, replayed=True)


# --- Start ------------------------------------------------------------------------------------


def api_amount_minor(amount: str, currency: str, *, space: Space) -> int:
    """A decimal string in major units ("12.34") -> minor units, between the provider's minimum
    for the currency and the space's maximum. money.to_minor accepts plain decimal notation
    only (no exponents, no spaces around it, ASCII digits): the same rule as the admin's."""
    try:
        minor = money.to_minor(amount, currency)
        money.check_amount(minor, currency, maximum=space.max_charge_for(currency))
    except money.MoneyError as exc:
        raise InvalidAmount(str(exc), field="amount") from exc
    return minor


def charge_issue_api_data(issue: ChargeIssue) -> dict:
    """What the API answers about an issue (and what an idempotent repeat gets again)."""
    customer = issue.customer
    admin_path = reverse("admin:billing_chargeissue_change", args=[issue.pk])
    return {
        "id": issue.pk,
        "state": issue.state,
        # The same forms the API accepts for `customer`: the external number, else "id:<pk>".
        "customer": customer.external_number or f"id:{customer.pk}",
        "amount_minor": issue.amount_minor,
        "refunded_minor": issue.refunded_minor,
        "currency": issue.currency,
        "reference": issue.external_reference,
        "admin_url": settings.PUBLIC_BASE_URL.rstrip("/") + admin_path,
    }


def api_idempotency_claim(
    *, api_key: ApiKey, key: str, request_hash: str
) -> tuple[ApiIdempotencyRecord | None, "ApiResponse | None"]:
    """Claim a client's Idempotency-Key inside the caller's transaction, before it creates
    anything: (the new record, None) to go on and fill its 201 body, or (None, the first
    answer) to replay. No key: (None, None). One key, one created object, whatever races."""
    if not key:
        return None, None
    try:
        with transaction.atomic():
            record = ApiIdempotencyRecord.objects.create(
                api_key=api_key, key=key, request_hash=request_hash, response_status=201,
                response_body={},
            )  # fmt: skip
    except IntegrityError:
        # Another request with this key committed while we waited on its row. Under READ
        # COMMITTED (Django's default) this next query sees that commit.
        replay = api_idempotent_response_get(api_key=api_key, key=key, request_hash=request_hash)
        if replay is None:
            raise
        return None, replay
    return record, None


def _live_reference_refuse(*, space_id: int, reference: str) -> None:
    existing = (
        ChargeIssue.objects.filter(
            space_id=space_id, external_reference=reference, state__in=LIVE_STATES
        )
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    if existing is not None:
        raise ReferenceInUse(existing)


def charge_issue_api_start(
    *,
    api_key: ApiKey,
    customer: Customer,
    amount: str = "",
    currency: str = "",
    reference: str = "",
    notification_subject: str = "",
    notification_body: str = "",
    idempotency_key: str = "",
    request_hash: str = "",
) -> ApiResponse:
    """Another system starts an issue at "1. charge amount entry" (201).

    `amount` is a proposal, never a decision: it is stored on the issue (amount_minor) while
    the issue stays awaiting amount, so a clerk confirms or changes it in 1. charge amount entry
    and someone else approves (four-eyes rule unchanged). The API cannot make anything
    chargeable by itself.

    With an `idempotency_key` the key is claimed (its record inserted) in the same transaction
    as the start. A concurrent request with the same key waits on that unique (api_key, key)
    row, fails when this one commits, and gets this response replayed: one key, one issue.
    Only this 201 is stored. Every refusal (400, 404, 409, 422) started nothing, so there is
    nothing to protect from a repeat, and the client may fix the request or the customer's
    card and retry under the same key (like Stripe, which saves no result when validation
    fails).

    A `reference` names one live charge in the space: a start with the reference of an issue
    that is not cancelled or failed (LIVE_STATES: succeeded counts, that order was charged) is
    refused with ReferenceInUse (409, naming it). The check here covers every live state; the
    database's unique index covers the unfinished ones, so two concurrent starts with one
    reference (and different Idempotency-Keys) cannot both win.
    """
    space = api_key.space
    if customer.space_id != space.pk:
        raise NotAllowed("This customer belongs to another space.", code="customer_not_found")
    currency = (currency or space.default_currency).upper()
    amount_minor = api_amount_minor(amount, currency, space=space) if amount else None
    detail = {"api_key": api_key.name, "api_key_prefix": api_key.prefix}
    if amount_minor is not None:
        detail["proposed_amount_minor"] = amount_minor
    if idempotency_key:
        detail["idempotency_key"] = idempotency_key

    with transaction.atomic():
        record, replay = api_idempotency_claim(
            api_key=api_key, key=idempotency_key, request_hash=request_hash
        )
        if replay is not None:
            return replay
        if reference:
            _live_reference_refuse(space_id=space.pk, reference=reference)
        issue = services.charge_issue_start(
            customer=customer,
            source=ChargeIssue.Source.API,
            external_reference=reference,
            currency=currency,
            notification_subject=notification_subject,
            notification_body=notification_body,
            amount_minor=amount_minor,
            detail=detail,
        )
        log_context_bind(issue=issue.pk)
        body = charge_issue_api_data(issue)
        if record is not None:
            record.response_body = body
            record.save(update_fields=["response_body"])
    logger.info("charge issue %s started through api key %s", issue.pk, api_key.prefix)
    return ApiResponse(201, body)


# --- Cancel -----------------------------------------------------------------------------------


def charge_issue_api_cancel(*, api_key: ApiKey, issue: ChargeIssue) -> ApiResponse:
    """Another system cancels one of its space's issues through the billing service (audited,
    naming the key); IllegalTransition (409) where the state does not allow it."""
    if issue.space_id != api_key.space_id:
        raise NotAllowed("This charge belongs to another space.", code="not_found")
    issue = services.charge_issue_cancel(
        issue=issue, via={"api_key": api_key.name, "api_key_prefix": api_key.prefix}
    )
    logger.info("charge issue %s cancelled through api key %s", issue.pk, api_key.prefix)
    return ApiResponse(200, charge_issue_api_data(issue))
