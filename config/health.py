"""Reachability checks for /healthz: database, Celery broker, payment provider."""

import logging

from django.conf import settings
from django.db import connection
from kombu import Connection

from payments import gateway

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 3.0


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=CHECK_TIMEOUT_SECONDS,
    ) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=CHECK_TIMEOUT_SECONDS)


def check_payment_provider() -> None:
    gateway.ping(timeout=CHECK_TIMEOUT_SECONDS)


CHECKS = {
    "database": check_database,
    "broker": check_broker,
    "payment_provider": check_payment_provider,
}


def run_checks() -> dict[str, dict]:
    """Run every check; a failure is reported by its exception type only (no internals leak)."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means "down" for this check
            logger.warning("health check %s failed: %s", name, exc.__class__.__name__)
            results[name] = {"ok": False, "error": exc.__class__.__name__}
        else:
            results[name] = {"ok": True}
    return results
