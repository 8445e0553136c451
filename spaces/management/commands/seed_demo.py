"""Demo data for the one-command local run: spaces and the three staff roles.

Idempotent: a second run reuses what exists. Passwords are generated once, kept in
var/demo-credentials.json (never committed) and printed every time.
"""

import json
import secrets

from django.conf import settings
from django.core.management.base import BaseCommand

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

        credentials_file.parent.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(json.dumps(credentials, indent=2))
        credentials_file.chmod(0o600)

        self.stdout.write("Demo users (space 'Demo Space'):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<9} password: {credentials[username]:<24} role: {role}")
