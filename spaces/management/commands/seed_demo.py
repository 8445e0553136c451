"""Demo data for the one-command local run: spaces and the three staff roles.

Idempotent: a second run reuses what exists. Passwords are generated once, kept in
var/demo-credentials.json (never committed) and printed every time.
"""

import json
import secrets

from django.conf import settings
from django.core.management.base import BaseCommand

from cards import services as card_services
from cards.exceptions import CardsError
from cards.models import Customer
from payments import gateway
from spaces.roles import ADMIN, APPROVER, CLERK
from spaces.services import space_get_or_create, staff_user_ensure

DEMO_USERS = ((CLERK, CLERK), (APPROVER, APPROVER), (ADMIN, ADMIN))


class Command(BaseCommand):
    help = "Create (or reuse) the demo space and the clerk, approver and admin users."

    def handle(self, *args, **options):
        credentials_file = settings.VAR_DIR / "demo-credentials.json"
        credentials = {}
        if credentials_file.is_file():
            credentials = json.loads(credentials_file.read_text())

        demo = space_get_or_create(slug="demo", name="Demo Space", default_currency="EUR")
        # A second space with no demo staff in it shows that staff see only their own spaces.
        space_get_or_create(slug="tokyo", name="Tokyo Branch", default_currency="JPY")

        for username, role in DEMO_USERS:
            password = credentials.get(username) or f"{username}-{secrets.token_urlsafe(9)}"
            credentials[username] = password
            staff_user_ensure(username=username, password=password, role=role, spaces=[demo])

        self._demo_customer(demo)

        credentials_file.parent.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(json.dumps(credentials, indent=2))
        credentials_file.chmod(0o600)

        self.stdout.write(
            "Demo users (space 'Demo Space'; a demo customer's card starts a charge):"
        )
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<9} password: {credentials[username]:<24} role: {role}")

    def _demo_customer(self, space):
        """A fictitious customer with a card on file, registered as the hosted page would (with
        Stripe's test card pm_card_visa, so no card number is involved). Its registration
        starts a charging issue waiting for "1. Charge amount entry"."""
        if Customer.objects.filter(space=space).exists():
            return
        try:
            intent = card_services.registration_setup_intent_start(space=space)
            gateway.setup_intent_confirm(intent.id, payment_method_id="pm_card_visa")
            registration = card_services.card_registration_complete(
                space=space,
                setup_intent_id=intent.id,
                name="Erika Mustermann",
                email="erika.mustermann@example.test",
                language="de",
            )
        except (CardsError, gateway.ProviderError) as exc:
            self.stderr.write(f"Demo customer skipped: the payment provider answered {exc}.")
            return
        customer = registration.customer
        customer.external_number = "0283759"
        # Through the service: the card's stored lookup key takes the new number too.
        card_services.customer_update(customer=customer, acting_user=None)
