"""Test settings: the real stack (PostgreSQL, Redis), only made faster.

localstripe's address is set by the session fixture in tests/conftest.py once it is listening.
Under pytest, tests/throwaway_services.py has already set DATABASE_URL, CELERY_BROKER_URL and
CACHE_URL (the machine's servers, or throwaway ones) before this is read; the defaults below are
for other uses of these settings.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-not-a-secret-0123456789abcdefghijklmnopqrstuv")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("CACHE_URL", "rediscache://127.0.0.1:6379/1")
os.environ.setdefault("STRIPE_SECRET_KEY", "sk_test_localstripe")
os.environ.setdefault("STRIPE_PUBLISHABLE_KEY", "pk_test_localstripe")
os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_localstripe")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("EMAIL_URL", "memorymail://")
os.environ.setdefault("PUBLIC_BASE_URL", "http://testserver")
# Tests receive webhooks on a plain-http loopback server; which networks are allowed stays the
# production default (none): the webhook tests allow 127.0.0.0/8 themselves.
os.environ.setdefault("WEBHOOK_ALLOW_HTTP", "true")

from .base import *  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Fixtures log in with a password (or force_login); the second-factor tests switch it on.
STAFF_2FA_REQUIRED = False
STRIPE_TIMEOUT_SECONDS = 5.0
# Tasks sent on commit run inline, so a test sees their effects (emails, dispatched events).
# The embedded broker is exercised by tests/test_make_run.py; Redis with real worker processes
# by tests/payments/test_real_broker.py, which starts its workers with CELERY_EAGER=false.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_EAGER", default=True)
CELERY_TASK_EAGER_PROPAGATES = True
# kombu looks for messages past their visibility timeout only every ~100 s by default (a sweep
# every 10 s that scans Redis on every 10th call): every second here, so the few seconds the
# real-broker tests set (CELERY_VISIBILITY_TIMEOUT) bring a killed worker's message back soon.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
# Test-only hook, read once in payments/attempts.py: seconds a worker waits between the
# provider's answer and recording it, so a test can kill it there. Exists only in test settings.
PAYMENTS_TEST_PAUSE_AFTER_PROVIDER_CALL_SECONDS = env.float(
    "PAYMENTS_TEST_PAUSE_AFTER_PROVIDER_CALL_SECONDS", default=0.0
)
# Static files from the source folders, as in the local run: no collectstatic before tests.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
