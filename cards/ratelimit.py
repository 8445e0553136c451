"""Per-IP attempt limits on the shared cache (Redis in production), fixed windows."""

import time
from functools import wraps

from django.conf import settings
from django.core.cache import cache
from django.shortcuts import render


def client_ip(request) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy rewrites
    # it, and then the proxy should set REMOTE_ADDR for us.
    return request.META.get("REMOTE_ADDR") or "unknown"


def attempt_allowed(*, scope: str, key: str, limit: int, window: int) -> tuple[bool, int]:
    """Count one attempt; (allowed, seconds until the window resets)."""
    now = int(time.time())
    window_start = now - now % window
    cache_key = f"ratelimit:{scope}:{key}:{window_start}"
    cache.add(cache_key, 0, timeout=window + 5)
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.add(cache_key, 1, timeout=window + 5)
        count = 1
    return count <= limit, window_start + window - now


def registration_rate_limited(view):
    """Limit POSTs to the registration pages per client IP; GETs are not counted."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.method == "POST":
            allowed, retry_after = attempt_allowed(
                scope="card-registration",
                key=client_ip(request),
                limit=settings.CARD_REGISTRATION_RATE_LIMIT,
                window=settings.CARD_REGISTRATION_RATE_WINDOW,
            )
            if not allowed:
                response = render(
                    request,
                    "cards/rate_limited.html",
                    {"retry_minutes": max(1, round(retry_after / 60))},
                    status=429,
                )
                response["Retry-After"] = str(retry_after)
                return response
        return view(request, *args, **kwargs)

    return wrapped
