"""Test session: the real stack. localstripe is started here; PostgreSQL and Redis are the
machine's, or throwaway ones that tests/throwaway_services.py starts when nothing answers.

With CI=true a missing PostgreSQL, Redis or Chromium fails the run. Without CI, only the
browser tests are skipped when Chromium is missing (a newcomer may not have it yet), and the
skip says how to get it.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

# Playwright's sync API runs an event loop in the test thread; Django's live_server views are
# plain sync code, so its async-safety guard would refuse them without this.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _redis_url() -> str:
    from django.conf import settings

    return settings.CELERY_BROKER_URL


@pytest.fixture(scope="session", autouse=True)
def _redis_is_up():
    url = _redis_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis at {url} is not reachable ({exc}). Tests need the real broker: start "
            "Redis or set CELERY_BROKER_URL and CACHE_URL.",
            pytrace=False,
        )


class LocalStripe:
    """A localstripe process on a free loopback port, spoken to over HTTP."""

    def __init__(self, url: str, secret_key: str):
        self.url = url
        self._auth = (secret_key, "")

    def list(self, resource: str, **params) -> list[dict]:
        """Every object of a resource ("customers", "payment_intents", ...), all pages."""
        items, params = [], {"limit": 100, **params}
        while True:
            response = requests.get(
                f"{self.url}/v1/{resource}", params=params, auth=self._auth, timeout=10
            )
            response.raise_for_status()
            page = response.json()
            items.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return items
            params["starting_after"] = page["data"][-1]["id"]

    def flush(self) -> None:
        requests.delete(f"{self.url}/_config/data", timeout=10).raise_for_status()


@pytest.fixture(scope="session", autouse=True)
def localstripe():
    """Start localstripe for the whole session and point the stripe SDK (via settings) at it."""
    from django.conf import settings

    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "localstripe_server.py"),
            "--port",
            "0",
            "--state",
            "",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("localstripe listening on "):
        proc.kill()
        pytest.fail(f"localstripe did not start: {line!r}", pytrace=False)
    url = line.removeprefix("localstripe listening on ")
    server = LocalStripe(url, settings.STRIPE_SECRET_KEY)
    deadline = time.monotonic() + 15
    while True:
        try:
            server.list("customers")
            break
        except requests.RequestException:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)

    settings.STRIPE_API_BASE = url
    settings.STRIPE_JS_URL = f"{url}/js.stripe.com/v3/"
    yield server
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not Path(CHROMIUM).exists():
        message = (
            f"Chromium not found at {CHROMIUM}: install it (`apt-get install chromium` on "
            "Debian or Ubuntu), or point CHROMIUM_PATH at a Chromium or Chrome binary, e.g. "
            "the one `.venv/bin/python -m playwright install chromium` downloads."
        )
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)  # justified: outside CI a newcomer may lack Chromium; CI fails
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--headless",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(autouse=True)
def _clear_shared_cache():
    """Rate-limit counters (shared Redis cache) and cached pages start empty in each test."""
    from django.core.cache import caches

    for cache in caches.all():
        cache.clear()


def confirm_setup_intent(
    server: LocalStripe,
    client_secret: str,
    number: str,
    *,
    exp_month: int = 6,
    exp_year: int = 2034,
) -> dict:
    """Do what Stripe.js does in the customer's browser: confirm the SetupIntent with a card,
    talking to the provider directly with the publishable key. Returns the provider's answer."""
    from django.conf import settings

    setup_intent_id = client_secret.split("_secret_")[0]
    response = requests.post(
        f"{server.url}/v1/setup_intents/{setup_intent_id}/confirm",
        json={
            "key": settings.STRIPE_PUBLISHABLE_KEY,
            "client_secret": client_secret,
            "payment_method_data": {
                "type": "card",
                "card": {
                    "number": number,
                    "exp_month": exp_month,
                    "exp_year": exp_year,
                    "cvc": "123",
                },
            },
        },
        timeout=10,
    )
    return response.json()


def confirm_sepa_setup_intent(server: LocalStripe, client_secret: str, iban: str) -> dict:
    """Do what Stripe.js's confirmSepaDebitSetup does in the customer's browser: confirm the
    SetupIntent with an IBAN, talking to the provider directly with the publishable key."""
    from django.conf import settings

    setup_intent_id = client_secret.split("_secret_")[0]
    response = requests.post(
        f"{server.url}/v1/setup_intents/{setup_intent_id}/confirm",
        json={
            "key": settings.STRIPE_PUBLISHABLE_KEY,
            "client_secret": client_secret,
            "payment_method_data": {"type": "sepa_debit", "sepa_debit": {"iban": iban}},
        },
        timeout=10,
    )
    return response.json()
