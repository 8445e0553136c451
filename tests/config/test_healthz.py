import pytest

pytestmark = pytest.mark.django_db


def test_healthz_reports_every_dependency_reachable(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {
        "database": {"ok": True},
        "broker": {"ok": True},
        "payment_provider": {"ok": True},
    }


def test_healthz_is_503_when_the_payment_provider_is_down(client, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # discard port: nothing listens

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["payment_provider"]["ok"] is False
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"] == {"ok": True}


def test_healthz_is_503_when_the_provider_refuses_our_key(client, settings):
    settings.STRIPE_SECRET_KEY = "not-a-key"

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["payment_provider"] == {
        "ok": False,
        "error": "AuthenticationError",
    }


def test_healthz_is_503_when_the_broker_is_down(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    response = client.get("/healthz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is False
    assert checks["payment_provider"] == {"ok": True}


def test_healthz_accepts_only_get(client):
    assert client.post("/healthz").status_code == 405


# --- Liveness and readiness apart -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz/ready", "/healthz"])
def test_readiness_checks_every_dependency(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "broker", "payment_provider"}


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
    assert checks["broker"] == {"ok": True} and checks["payment_provider"] == {"ok": True}


def test_liveness_answers_while_every_dependency_is_down(client, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    live = client.get("/healthz/live")
    ready = client.get("/healthz/ready")

    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert ready.status_code == 503
    assert {name for name, r in ready.json()["checks"].items() if not r["ok"]} == {
        "broker",
        "payment_provider",
    }


@pytest.mark.parametrize("path", ["/healthz/live", "/healthz/ready"])
def test_health_endpoints_accept_only_get_and_are_not_cached(client, path):
    assert client.post(path).status_code == 405
    assert "no-cache" in client.get(path)["Cache-Control"]
