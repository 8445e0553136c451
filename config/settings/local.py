"""One-command local run: SQLite, an embedded Celery broker, localstripe, console email.

Every value here is a development default that the environment may still override.
"""

import os
from pathlib import Path

_VAR = Path(os.environ.get("VAR_DIR") or Path(__file__).resolve().parent.parent.parent / "var")

os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("SECRET_KEY", "local-development-only-not-a-secret-0123456789abcdefghij")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_VAR / 'db.sqlite3'}")
os.environ.setdefault("STRIPE_SECRET_KEY", "sk_test_localstripe")
os.environ.setdefault("STRIPE_PUBLISHABLE_KEY", "pk_test_localstripe")
os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_localstripe")
_LOCALSTRIPE = f"http://127.0.0.1:{os.environ.get('LOCALSTRIPE_PORT', '8420')}"
os.environ.setdefault("STRIPE_API_BASE", _LOCALSTRIPE)
os.environ.setdefault("STRIPE_JS_URL", f"{_LOCALSTRIPE}/js.stripe.com/v3/")
# A webhook receiver on a developer's machine is usually plain http.
os.environ.setdefault("WEBHOOK_ALLOW_HTTP", "true")
# The demo users (clerk, approver, admin) log in with their password only; set it to true to
# try enrolment and the second-factor step locally.
os.environ.setdefault("STAFF_2FA_REQUIRED", "false")
# Empty means "use the embedded broker" below; Redis when the variable is set.
os.environ.setdefault("CELERY_BROKER_URL", "")

from .base import *  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and beat share one SQLite file: wait for a lock instead of
    # failing with "database is locked", and take the write lock when a transaction begins so
    # two writers never deadlock upgrading their read locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }

if not CELERY_BROKER_URL:
    # Embedded kombu transport: messages are files under var/, so a newcomer needs no broker.
    _queue = VAR_DIR / "celery" / "queue"
    _control = VAR_DIR / "celery" / "control"
    for _folder in (_queue, _control):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "control_folder": str(_control),
        "store_processed": False,
    }

# WhiteNoise serves static files straight from the apps' and static/ folders: no collectstatic
# in the local run (production serves the collected, hashed files instead).
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
