"""Development only: ask localstripe to deliver its provider events to our webhook endpoint.

Real Stripe is configured in its dashboard (or with `stripe listen`); localstripe has its own
`/_config/webhooks/<name>` endpoint instead. `make run` calls this once localstripe is up, so
the local back office hears payment_intent.* and payment_method.* events as production does.
"""

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from payments.webhooks import (
    CHARGE_REFUNDED,
    PAYMENT_INTENT_EVENTS,
    PAYMENT_METHOD_EVENTS,
    REFUND_EVENTS,
)


class Command(BaseCommand):
    help = "Register our /webhooks/stripe URL with localstripe (development only)."

    def add_arguments(self, parser):
        parser.add_argument("url", help="Our endpoint, e.g. http://127.0.0.1:8000/webhooks/stripe")

    def handle(self, *args, url, **options):
        events = sorted(
            PAYMENT_INTENT_EVENTS | PAYMENT_METHOD_EVENTS | REFUND_EVENTS | {CHARGE_REFUNDED}
        )
        try:
            response = requests.post(
                f"{settings.STRIPE_API_BASE.rstrip('/')}/_config/webhooks/backoffice",
                data={"url": url, "secret": settings.STRIPE_WEBHOOK_SECRET, "events[]": events},
                timeout=10,
            )
            response.raise_for_status()
        except requests.RequestException as exc:
            raise CommandError(
                f"localstripe at {settings.STRIPE_API_BASE} did not take the webhook: {exc}"
            ) from exc
        self.stdout.write(f"localstripe delivers {len(events)} event types to {url}")
