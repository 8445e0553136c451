"""Attempt limits on the shared cache (Redis in production), fixed windows: per client IP for
the hosted pages, per API key for the API."""

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


def posts_rate_limited(*, scope: str, limit_setting: str, window_setting: str, template: str):
    """A view decorator limiting POSTs per client IP (GETs are not counted) to the number of
    attempts per window (seconds) that the two named settings hold, read at each request so
    a change applies at once. Over the limit: `template` with `retry_minutes`, status 429 and
    Retry-After."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method == "POST":
                allowed, retry_after = attempt_allowed(
                    scope=scope,
                    key=client_ip(request),
                    limit=getattr(settings, limit_setting),
                    window=getattr(settings, window_setting),
                )
                if not allowed:
                    response = render(
                        request,
                        template,
                        {"retry_minutes": max(1, round(retry_after / 60))},
                        status=429,
                    )
                    response["Retry-After"] = str(retry_after)
                    return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
