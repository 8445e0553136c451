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
