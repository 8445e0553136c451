"""The one place that talks to the payment provider (Stripe, through the official SDK).

Everything else calls functions here and gets plain values back. Only the API base and the keys
come from settings, so the same calls run against Stripe in production and against localstripe
in development and tests.

Provider quirks this module knows about (localstripe, the development stand-in):
- it ignores Idempotency-Key, so exactly-once is guaranteed by our database and by looking
  objects up before creating them again; we still send keys, which real Stripe honours;
- a confirmed SetupIntent does not attach its PaymentMethod to a customer, so we attach it
  ourselves (harmless on Stripe, where a SetupIntent made without a customer does not either).
"""

import json
from dataclasses import dataclass
from functools import lru_cache

import stripe
from django.conf import settings

ProviderError = stripe.StripeError
CardError = stripe.CardError
InvalidRequestError = stripe.InvalidRequestError


@lru_cache(maxsize=8)
def _client(api_key: str, api_base: str, timeout: float) -> stripe.StripeClient:
    # No SDK network retries: a retried call that the provider does not de-duplicate could
    # create twice; our own rows and reconcilers decide about retries.
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        http_client=stripe.RequestsClient(timeout=timeout),
        max_network_retries=0,
    )


def client(*, timeout: float | None = None) -> stripe.StripeClient:
    """The SDK client for the current settings (one per settings combination, so keep-alive
    connections are reused)."""
    return _client(
        settings.STRIPE_SECRET_KEY,
        settings.STRIPE_API_BASE,
        timeout if timeout is not None else settings.STRIPE_TIMEOUT_SECONDS,
    )


def ping(*, timeout: float) -> None:
    """Raise if the provider cannot be reached or refuses our key."""
    client(timeout=timeout).v1.customers.list(params={"limit": 1})


# --- Cards ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupIntent:
    id: str
    client_secret: str
    status: str
    usage: str
    payment_method_id: str | None
    metadata: dict


@dataclass(frozen=True)
class CardDetails:
    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str
    customer_id: str | None


def _setup_intent(obj) -> SetupIntent:
    obj = obj.to_dict()
    payment_method = obj.get("payment_method")
    if payment_method is not None and not isinstance(payment_method, str):
        payment_method = payment_method["id"]
    return SetupIntent(
        id=obj["id"],
        client_secret=obj.get("client_secret") or "",
        status=obj["status"],
        usage=obj.get("usage") or "",
        payment_method_id=payment_method,
        metadata=dict(obj.get("metadata") or {}),
    )


def setup_intent_create(
    *, metadata: dict[str, str], payment_method_type: str = "card"
) -> SetupIntent:
    """A SetupIntent for saving a card (or a SEPA Direct Debit account, `sepa_debit`) for
    later off-session charges."""
    obj = client().v1.setup_intents.create(
        params={
            "usage": "off_session",
            "payment_method_types": [payment_method_type],
            "metadata": metadata,
        }
    )
    return _setup_intent(obj)


def setup_intent_confirm(setup_intent_id: str, *, payment_method_id: str) -> SetupIntent:
    """Server-side confirmation with an existing PaymentMethod id. Customers confirm in the
    browser; this is for Stripe's test-mode methods (pm_card_visa) in demo data."""
    obj = client().v1.setup_intents.confirm(
        setup_intent_id, params={"payment_method": payment_method_id}
    )
    return _setup_intent(obj)


def setup_intent_retrieve(setup_intent_id: str) -> SetupIntent:
    return _setup_intent(client().v1.setup_intents.retrieve(setup_intent_id))


def payment_method_retrieve(payment_method_id: str) -> CardDetails:
    obj = client().v1.payment_methods.retrieve(payment_method_id).to_dict()
    card = obj["card"]
    customer = obj.get("customer")
    if customer is not None and not isinstance(customer, str):
        customer = customer["id"]
    return CardDetails(
        payment_method_id=obj["id"],
        brand=card["brand"],
        last4=card["last4"],
        exp_month=int(card["exp_month"]),
        exp_year=int(card["exp_year"]),
        fingerprint=card.get("fingerprint") or "",
        customer_id=customer,
    )


@dataclass(frozen=True)
class SepaDebitDetails:
    """What we keep of a SEPA Direct Debit PaymentMethod: never the IBAN itself."""

    payment_method_id: str
    country: str
    bank_code: str
    last4: str
    fingerprint: str
    customer_id: str | None


def sepa_debit_retrieve(payment_method_id: str) -> SepaDebitDetails | None:
    """The SEPA details of a PaymentMethod; None if it is not a sepa_debit one."""
    obj = client().v1.payment_methods.retrieve(payment_method_id).to_dict()
    if obj.get("type") != "sepa_debit":
        return None
    sepa = obj.get("sepa_debit") or {}
    customer = obj.get("customer")
    if customer is not None and not isinstance(customer, str):
        customer = customer["id"]
    return SepaDebitDetails(
        payment_method_id=obj["id"],
        country=sepa.get("country") or "",
        bank_code=sepa.get("bank_code") or "",
        last4=sepa.get("last4") or "",
        fingerprint=sepa.get("fingerprint") or "",
        customer_id=customer,
    )


def customer_create(
    *, name: str, email: str, locale: str, metadata: dict[str, str], idempotency_key: str
) -> str:
    obj = client().v1.customers.create(
        params={
            "name": name,
            "email": email,
            "preferred_locales": [locale],
            "metadata": metadata,
        },
        options={"idempotency_key": idempotency_key},
    )
    return obj.id


def customer_find(*, email: str, metadata_key: str, metadata_value: str) -> str | None:
    """A customer we created earlier for this email and marker, if the provider has one.

    Used before creating a customer again after a crash, because localstripe (and Stripe after
    24 hours) would not de-duplicate the retried create.
    """
    page = client().v1.customers.list(params={"email": email, "limit": 100})
    for obj in page.auto_paging_iter():
        if (obj.to_dict().get("metadata") or {}).get(metadata_key) == metadata_value:
            return obj.id
    return None


def payment_method_attach(*, payment_method_id: str, customer_id: str) -> None:
    client().v1.payment_methods.attach(
        payment_method_id,
        params={"customer": customer_id},
        options={"idempotency_key": f"attach-{payment_method_id}-{customer_id}"},
    )


def payment_method_detach(payment_method_id: str) -> None:
    client().v1.payment_methods.detach(payment_method_id)


def customer_set_default_payment_method(*, customer_id: str, payment_method_id: str) -> None:
    client().v1.customers.update(
        customer_id, params={"invoice_settings": {"default_payment_method": payment_method_id}}
    )


# --- Charges ----------------------------------------------------------------------------------

# Declines that will not succeed on a retry with the same card (Stripe's "do not retry" set).
HARD_DECLINE_CODES = frozenset(
    {
        "card_not_supported",
        "currency_not_supported",
        "do_not_honor",
        "do_not_try_again",
        "expired_card",
        "fraudulent",
        "incorrect_number",
        "invalid_account",
        "invalid_number",
        "lost_card",
        "merchant_blacklist",
        "new_account_information_available",
        "pickup_card",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "service_not_allowed",
        "stolen_card",
        "stop_payment_order",
        "transaction_not_allowed",
    }
)


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    payment_intent_id: str
    status: str
    failure_code: str = ""
    decline_code: str = ""
    message: str = ""
    charge_id: str = ""
    # Set for a refund's outcome (see refund_create): the provider's Refund id.
    refund_id: str = ""

    @property
    def hard_decline(self) -> bool:
        return not self.succeeded and (
            self.decline_code in HARD_DECLINE_CODES or self.failure_code in HARD_DECLINE_CODES
        )


def payment_intent_charge_off_session(
    *,
    customer_id: str,
    payment_method_id: str,
    amount_minor: int,
    currency: str,
    idempotency_key: str,
    metadata: dict[str, str],
    off_session: bool = True,
) -> ChargeResult:
    """Create and confirm a PaymentIntent off-session (the customer is not present).

    With off_session=False the customer is present (a hosted page): a card that asks for
    3-D Secure leaves the intent `requires_action`, for the page's Stripe.js to complete.

    A decline is a result, not an exception. Anything else raised (network, timeout, 5xx)
    leaves the outcome unknown: the caller must reconcile before retrying.
    """
    session = {"off_session": True} if off_session else {}
    try:
        obj = client().v1.payment_intents.create(
            params={
                "amount": amount_minor,
                "currency": currency.lower(),
                "customer": customer_id,
                "payment_method": payment_method_id,
                "confirm": True,
                **session,
                "metadata": metadata,
            },
            options={"idempotency_key": idempotency_key},
        )
    except stripe.CardError as exc:
        error = exc.error
        intent = getattr(error, "payment_intent", None) if error else None
        return ChargeResult(
            succeeded=False,
            payment_intent_id=(intent.id if intent is not None else ""),
            status="requires_payment_method",
            failure_code=exc.code or "card_declined",
            decline_code=(getattr(error, "decline_code", None) or "") if error else "",
            message=exc.user_message or "The card was declined.",
        )
    return _charge_result(obj.to_dict())


def _charge_result(obj: dict) -> ChargeResult:
    status = obj["status"]
    error = obj.get("last_payment_error") or {}
    charge = obj.get("latest_charge") or ""
    if not charge:
        # Older API versions (and localstripe) list the charges on the intent instead.
        charges = (obj.get("charges") or {}).get("data") or []
        charge = charges[-1] if charges else ""
    if isinstance(charge, dict):
        charge = charge.get("id") or ""
    waiting = status in {"succeeded", "processing"}
    return ChargeResult(
        succeeded=status == "succeeded",
        payment_intent_id=obj["id"],
        status=status,
        failure_code=error.get("code") or ("" if waiting else status),
        decline_code=error.get("decline_code") or "",
        message=error.get("message") or "",
        charge_id=charge,
    )


def charge_result_from(payment_intent: dict) -> ChargeResult:
    """The outcome a PaymentIntent (as a webhook carries it) stands for."""
    return _charge_result(payment_intent)


def payment_intent_client_secret(payment_intent_id: str) -> str:
    """What a hosted page's Stripe.js needs to complete a PaymentIntent (3-D Secure)."""
    return client().v1.payment_intents.retrieve(payment_intent_id).client_secret or ""


def payment_intent_retrieve(payment_intent_id: str) -> ChargeResult:
    return _charge_result(client().v1.payment_intents.retrieve(payment_intent_id).to_dict())


# --- Refunds ----------------------------------------------------------------------------------


def refund_result_from(obj: dict) -> ChargeResult:
    """The outcome a provider Refund stands for, in the shape every attempt records: a refund
    still `pending` (or `requires_action`) is "processing" and settles later (webhook or
    reconciler); `failed` and `canceled` are failures."""
    status = obj.get("status") or ""
    intent = obj.get("payment_intent") or ""
    if isinstance(intent, dict):
        intent = intent.get("id") or ""
    charge = obj.get("charge") or ""
    if isinstance(charge, dict):
        charge = charge.get("id") or ""
    if status == "succeeded":
        mapped, code = "succeeded", ""
    elif status in {"pending", "requires_action"}:
        mapped, code = "processing", ""
    else:
        mapped, code = "failed", obj.get("failure_reason") or f"refund_{status or 'failed'}"
    return ChargeResult(
        succeeded=mapped == "succeeded",
        payment_intent_id=intent,
        status=mapped,
        failure_code=code,
        message="" if mapped != "failed" else "The provider did not make the refund.",
        charge_id=charge,
        refund_id=obj.get("id") or "",
    )


def refund_create(
    *, payment_intent_id: str, amount_minor: int, idempotency_key: str, metadata: dict[str, str]
) -> ChargeResult:
    """Refund part or all of a PaymentIntent's charge.

    A refusal by the provider (an invalid request: already refunded, a failed payment) is a
    result, not an exception: nothing was created. Anything else raised (network, timeout,
    5xx) leaves the outcome unknown: the caller must reconcile before retrying.
    """
    try:
        obj = client().v1.refunds.create(
            params={
                "payment_intent": payment_intent_id,
                "amount": amount_minor,
                "metadata": metadata,
            },
            options={"idempotency_key": idempotency_key},
        )
    except stripe.InvalidRequestError as exc:
        return ChargeResult(
            succeeded=False,
            payment_intent_id=payment_intent_id,
            status="failed",
            failure_code=exc.code or "refund_refused",
            message=(exc.user_message or "The provider refused the refund.")[:300],
        )
    return refund_result_from(obj.to_dict())


def refund_retrieve(refund_id: str) -> ChargeResult:
    return refund_result_from(client().v1.refunds.retrieve(refund_id).to_dict())


def refund_find(*, payment_intent_id: str, metadata_key: str, metadata_value: str):
    """The outcome of an earlier refund we may have made, found by its metadata marker among
    the PaymentIntent's refunds. None if there is none, i.e. no money can have moved."""
    refunds = client().v1.refunds.list(params={"payment_intent": payment_intent_id, "limit": 100})
    for refund in refunds.auto_paging_iter():
        obj = refund.to_dict()
        if (obj.get("metadata") or {}).get(metadata_key) == metadata_value:
            return refund_result_from(obj)
    return None


# --- Webhooks ---------------------------------------------------------------------------------

SignatureError = stripe.SignatureVerificationError
# Stripe's own default: an event signed longer ago than this is refused as a possible replay.
WEBHOOK_TOLERANCE_SECONDS = 300


def webhook_event_verify(*, payload: bytes, signature_header: str) -> dict:
    """The event a provider webhook carries, once its signature and age are verified with the
    SDK; raises SignatureError or ValueError (not JSON)."""
    event = json.loads(payload)
    if not isinstance(event, dict):
        # The SDK assumes an object and would fail with an AttributeError on anything else.
        raise ValueError("The webhook body is not a JSON object.")
    stripe.Webhook.construct_event(
        payload,
        signature_header,
        settings.STRIPE_WEBHOOK_SECRET,
        tolerance=WEBHOOK_TOLERANCE_SECONDS,
    )
    return event


def payment_intent_find(*, customer_id: str, metadata_key: str, metadata_value: str):
    """The outcome of an earlier charge we may have made, found by its metadata marker.

    Looked up through the customer's charges (every confirmed PaymentIntent has one, declined
    or not), which both Stripe and localstripe can list by customer. None if no charge exists,
    i.e. no money can have moved.
    """
    charges = client().v1.charges.list(params={"customer": customer_id, "limit": 100})
    seen = set()
    for charge in charges.auto_paging_iter():
        intent_id = charge.to_dict().get("payment_intent")
        if not intent_id or intent_id in seen:
            continue
        seen.add(intent_id)
        intent = client().v1.payment_intents.retrieve(intent_id).to_dict()
        if (intent.get("metadata") or {}).get(metadata_key) == metadata_value:
            return _charge_result(intent)
    return None
