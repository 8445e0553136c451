"""Production: every secret comes from the environment, with no default; HTTPS only."""

from django.core.exceptions import ImproperlyConfigured

from .base import *

DEBUG = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy that talks plain http to us, SECURE_PROXY_SSL_HEADER above
# tells Django the client used https; the proxy must set (overwrite) X-Forwarded-Proto. A load
# balancer's health probe comes over plain http without it: answer it rather than redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz(/|$)"]

# Compressed (gzip, brotli when installed), hashed file names cached forever by browsers; needs
# `manage.py collectstatic` before the web processes start (the Procfile's release step).
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# One JSON object per line for the log collector, unless LOG_FORMAT says plain.
LOG_FORMAT = env("LOG_FORMAT", default="json")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}.")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT

# `make run-prod-like` only (scripts/run_prod_like.py): these production settings served over
# plain http on this machine, so cookies must not be marked https-only, nothing redirects to
# https and no HSTS is sent. Refused unless every allowed host is a loopback name, so a real
# deployment cannot switch https off with it.
if env.bool("PLAIN_HTTP_ON_LOOPBACK", default=False):
    if not ALLOWED_HOSTS or set(ALLOWED_HOSTS) - {"127.0.0.1", "localhost", "[::1]"}:
        raise ImproperlyConfigured(
            "PLAIN_HTTP_ON_LOOPBACK is for a local run only: ALLOWED_HOSTS must then be "
            "loopback names (127.0.0.1, localhost, [::1])."
        )
    SECURE_SSL_REDIRECT = False
    SECURE_HSTS_SECONDS = 0
    SESSION_COOKIE_SECURE = False
    CSRF_COOKIE_SECURE = False
