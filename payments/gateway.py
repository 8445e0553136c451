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


def setup_intent_create(*, metadata: dict[str, str]) -> SetupIntent:
    """A SetupIntent for saving a card for later off-session charges."""
    obj = client().v1.setup_intents.create(
        params={"usage": "off_session", "payment_method_types": ["card"], "metadata": metadata}
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


def customer_set_default_payment_method(*, customer_id: str, payment_method_id: str) -> None:
    client().v1.customers.update(
        customer_id, params={"invoice_settings": {"default_payment_method": payment_method_id}}
    )
