"""Headers for the hosted pages customers see."""

from functools import lru_cache, wraps
from urllib.parse import urlsplit

from django.conf import settings


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy() -> str:
    """Scripts and frames only from our origin and Stripe.js's; API calls also to the provider."""
    return _policy(settings.STRIPE_JS_URL, settings.STRIPE_API_BASE)


@lru_cache(maxsize=4)
def _policy(stripe_js_url: str, stripe_api_base: str) -> str:
    stripe_js = _origin(stripe_js_url)
    stripe_api = _origin(stripe_api_base)
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {stripe_js}",
            f"frame-src 'self' {stripe_js}",
            f"connect-src 'self' {' '.join(sorted({stripe_js, stripe_api}))}",
            "img-src 'self' data:",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def apply_hosted_headers(response):
    """The headers every hosted page (and its error pages) carries."""
    response["Content-Security-Policy"] = content_security_policy()
    # same-origin: Django's CSRF check needs our own Origin; other sites (the provider)
    # never see the page URL, which for invitations carries the token.
    response["Referrer-Policy"] = "same-origin"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    response["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    return response


def hosted_page(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        return apply_hosted_headers(view(request, *args, **kwargs))

    return wrapped
