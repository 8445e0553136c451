import logging

import pytest
import redis
from django.core.cache import cache
from django.test import Client

from config import health
from payments import gateway

pytestmark = pytest.mark.django_db


def test_healthz_reports_the_database_and_broker_reachable(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": {"ok": True}, "broker": {"ok": True}}


def test_healthz_is_503_when_the_broker_is_down(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    response = client.get("/healthz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is False
    assert checks["database"] == {"ok": True}


def test_healthz_accepts_only_get(client):
    assert client.post("/healthz").status_code == 405


# --- Liveness and readiness apart -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz/ready", "/healthz"])
def test_readiness_checks_the_database_and_the_broker(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "broker"}


@pytest.mark.parametrize("path", ["/healthz/ready", "/healthz"])
def test_readiness_is_503_when_the_database_is_down(client, settings, path):
    from django.db import connections

    connection = connections["default"]
    saved = connection.settings_dict["PORT"]
    # Reconnect to a port where nothing listens; the test's own connection is restored below.
    connection.close()
    connection.settings_dict["PORT"] = "9"
    try:
        response = client.get(path)
    finally:
        connection.close()
        connection.settings_dict["PORT"] = saved

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is False
    assert checks["broker"] == {"ok": True}


def test_liveness_answers_while_every_dependency_is_down(client, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    live = client.get("/healthz/live")
    ready = client.get("/healthz/ready")

    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert ready.status_code == 503
    assert {name for name, r in ready.json()["checks"].items() if not r["ok"]} == {"broker"}


@pytest.mark.parametrize("path", ["/healthz/live", "/healthz/ready", "/healthz/provider"])
def test_health_endpoints_accept_only_get_and_are_not_cached(client, path):
    assert client.post(path).status_code == 405
    assert "no-cache" in client.get(path)["Cache-Control"]


# --- The provider: not in readiness, reported for monitoring --------------------------------


@pytest.mark.parametrize("path", ["/healthz/ready", "/healthz"])
def test_a_provider_outage_keeps_every_web_process_ready(client, settings, path):
    """One provider hiccup must not take every web process out of the load balancer: the
    admin, the paid-link page and webhook intake need no provider."""
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # discard port: nothing listens

    response = client.get(path)

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": {"ok": True}, "broker": {"ok": True}}


def test_a_failing_readiness_probe_logs_a_warning_and_no_error(client, settings, caplog):
    """Load balancers probe every few seconds: an outage is one WARNING per probe naming what is
    down, never an ERROR (Django logs any 503 at ERROR unless told it was logged)."""
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    with caplog.at_level(logging.DEBUG):
        response = client.get("/healthz/ready")

    assert response.status_code == 503
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Health probe /healthz/ready: down: broker (OperationalError)"]


def test_the_provider_endpoint_reports_the_provider_reachable(client):
    response = client.get("/healthz/provider")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"payment_provider": {"ok": True}}}


def test_the_provider_endpoint_is_503_naming_the_outage_without_an_error_log(
    client, settings, caplog
):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"

    with caplog.at_level(logging.DEBUG):
        response = client.get("/healthz/provider")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"payment_provider": {"ok": False, "error": "APIConnectionError"}},
    }
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_the_provider_endpoint_reports_a_refused_key(client, settings):
    settings.STRIPE_SECRET_KEY = "not-a-key"

    response = client.get("/healthz/provider")

    assert response.status_code == 503
    assert response.json()["checks"]["payment_provider"] == {
        "ok": False,
        "error": "AuthenticationError",
    }


@pytest.fixture
def provider_pings(monkeypatch):
    """Counts the calls that reach the provider. The real ping still runs (against localstripe):
    this only counts them."""
    calls = []
    real_ping = gateway.ping

    def counting_ping(**kwargs):
        calls.append(kwargs)
        return real_ping(**kwargs)

    monkeypatch.setattr(gateway, "ping", counting_ping)
    return calls


def test_provider_polls_within_the_cache_window_make_one_provider_call(
    client, settings, provider_pings
):
    first = client.get("/healthz/provider")
    # Another process (a fresh client) within the window shares the result: the cache is the
    # shared one, not this process's memory.
    second = Client().get("/healthz/provider")

    assert first.status_code == second.status_code == 200
    assert len(provider_pings) == 1


def test_an_outage_is_reported_for_the_window_then_asked_again(client, settings, provider_pings):
    live_base = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    assert client.get("/healthz/provider").status_code == 503
    settings.STRIPE_API_BASE = live_base

    # Back within the window: still reported down, and the provider is not asked again.
    assert client.get("/healthz/provider").status_code == 503
    assert len(provider_pings) == 1

    # The entry lives a few seconds in the shared Redis cache, then the provider is asked again.
    ttl = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).ttl(
        cache.make_key(health.PROVIDER_CACHE_KEY)
    )
    assert 0 < ttl <= health.PROVIDER_CACHE_SECONDS
    cache.delete(health.PROVIDER_CACHE_KEY)  # the window has passed
    assert client.get("/healthz/provider").status_code == 200
    assert len(provider_pings) == 2
