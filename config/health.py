"""Reachability checks for /healthz: database and Celery broker (readiness), and the payment
provider (its own endpoint, for monitoring).

Why the provider is not part of readiness: readiness takes a web process out of the load
balancer. A provider hiccup hits every process at once, so with the provider in readiness one
slow answer from Stripe emptied the whole pool, and pages that need no provider (the admin, the
"already paid" page, webhooks we only store) went down with it. A charge that cannot reach the
provider is already handled on the money path (unknown outcome, reconciled later).
"""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from kombu import Connection

from payments import gateway

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 3.0
# Monitoring may poll /healthz/provider from many places against many web processes; within
# this window they share one provider call (the shared cache), so polling never adds load on
# the provider or eats into its rate limit.
PROVIDER_CACHE_SECONDS = 10
PROVIDER_CACHE_KEY = "healthz:payment_provider"


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


READINESS_CHECKS = {
    "database": check_database,
    "broker": check_broker,
}


def _run(check) -> dict:
    """A failure is reported by its exception type only (no internals leak). It is not logged
    here: the endpoint logs one line per probe naming what is down."""
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means "down" for this check
        return {"ok": False, "error": exc.__class__.__name__}
    return {"ok": True}


def readiness_checks() -> dict[str, dict]:
    return {name: _run(check) for name, check in READINESS_CHECKS.items()}


def provider_check() -> dict[str, dict]:
    """The provider's reachability, answered from the shared cache for PROVIDER_CACHE_SECONDS.
    A down provider is cached too: an outage is reported for the window, not re-tried by every
    poll. If the cache itself is unreachable the provider is asked directly."""
    try:
        cached = cache.get(PROVIDER_CACHE_KEY)
    except Exception as exc:  # noqa: BLE001 - a cache outage must not hide the provider's state
        logger.warning("health: cache unreachable (%s)", exc.__class__.__name__)
        return {"payment_provider": _run(check_payment_provider)}
    if cached is not None:
        return {"payment_provider": cached}
    result = _run(check_payment_provider)
    try:
        cache.set(PROVIDER_CACHE_KEY, result, PROVIDER_CACHE_SECONDS)
    except Exception as exc:  # noqa: BLE001
        logger.warning("health: cache unreachable (%s)", exc.__class__.__name__)
    return {"payment_provider": result}
