"""The one place that talks to the payment provider (Stripe, through the official SDK).

Everything else calls functions here. Only the API base and the keys come from settings, so the
same calls run against Stripe in production and against localstripe in development and tests.
"""

import stripe
from django.conf import settings

ProviderError = stripe.StripeError


def client() -> stripe.StripeClient:
    # Built per call from settings so a changed STRIPE_API_BASE (tests, health checks) applies.
    # No SDK network retries: a retried call that localstripe does not de-duplicate could charge
    # twice; our own attempt rows and the reconciler decide about retries.
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
        max_network_retries=0,
    )


def ping(*, timeout: float) -> None:
    """Raise if the provider cannot be reached or refuses our key."""
    stripe_client = stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        http_client=stripe.RequestsClient(timeout=timeout),
        max_network_retries=0,
    )
    stripe_client.v1.customers.list(params={"limit": 1})
