"""Headers for the hosted pages customers see (card registration, payment links) and for the
error and refusal pages answered in their place: the Content-Security-Policy that lets in only
Stripe.js, and the headers that keep the page (whose URL may carry a token) private."""

from functools import lru_cache, wraps
from urllib.parse import urlsplit

from django.conf import settings


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy() -> str:
    """Scripts and frames only from our origin and Stripe.js's; API calls also to the provider."""
    return _policy(settings.STRIPE_JS_URL, settings.STRIPE_API_BASE)


STRIPE_JS_HOST = "js.stripe.com"

# Stripe's published CSP for Stripe.js (docs.stripe.com/security/guide, "Content Security
# Policy"): the script and its frames come from js.stripe.com and its subdomains, 3-D Secure
# challenges open a frame on hooks.stripe.com. maps.googleapis.com is only for the Address
# Element, which these pages do not use.
STRIPE_SCRIPT_SOURCES = ("https://js.stripe.com", "https://*.js.stripe.com")
STRIPE_FRAME_SOURCES = (*STRIPE_SCRIPT_SOURCES, "https://hooks.stripe.com")


@lru_cache(maxsize=4)
def _policy(stripe_js_url: str, stripe_api_base: str) -> str:
    stripe_js = _origin(stripe_js_url)
    stripe_api = _origin(stripe_api_base)
    if urlsplit(stripe_js_url).hostname == STRIPE_JS_HOST:
        scripts, frames, connect = STRIPE_SCRIPT_SOURCES, STRIPE_FRAME_SOURCES, (stripe_api,)
    else:
        # A stand-in (localstripe in development and tests) serves its script, its 3-D Secure
        # dialog and the API it calls from its own origin.
        scripts = frames = (stripe_js,)
        connect = tuple(sorted({stripe_js, stripe_api}))
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {' '.join(scripts)}",
            f"frame-src 'self' {' '.join(frames)}",
            f"connect-src 'self' {' '.join(connect)}",
            "img-src 'self' data:",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def apply_hosted_headers(response, *, policy: str | None = None):
    """The headers every hosted page (and its error pages) carries. `policy` replaces the
    hosted pages' CSP for a page that needs less (the card-number guard's refusal page)."""
    response["Content-Security-Policy"] = policy or content_security_policy()
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
