"""Settings shared by every environment, read only from the environment.

Secrets have no default here: local.py and test.py set harmless development values before
importing this module, production.py sets none.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

# Local state: the SQLite database, localstripe's state, the embedded broker, demo credentials.
VAR_DIR = Path(env("VAR_DIR", default=str(BASE_DIR / "var")))

# --- Core -------------------------------------------------------------------------------------
SECRET_KEY = env("SECRET_KEY")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The project's 403 page (JSON under /api/, hosted headers under /register/), not Django's.
CSRF_FAILURE_VIEW = "config.views.csrf_failure"

INSTALLED_APPS = [
    # The admin's theme, and Django's admin with the project's site (config/admin_site.py:
    # every admin answers only the lookups it declares, and never shows a secret).
    "unfold.apps.BasicAppConfig",
    "config.apps.BackOfficeAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "crispy_forms",
    "crispy_bootstrap5",
    "django_celery_beat",
    # Staff second factor (TOTP, recovery codes) and login lockout; before our apps so that
    # spaces/admin.py can replace their admin pages.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    # Field-level history of configuration (core/history.py says why this library).
    "simple_history",
    # django-ninja (the /api/v1/ API): listed so its docs page uses the Swagger UI files it
    # ships, served as static files, rather than loading them from a CDN.
    "ninja",
    "core",
    "spaces",
    "payments",
    "cards",
    "billing",
    "recurring",
    "chargeflows",
]

MIDDLEWARE = [
    # First: every answer, early ones included, carries X-Request-ID, and every line logged
    # while serving it the same id (core.logging).
    "core.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (compressed, hashed names in production) served before anything else runs.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Response-only, so it can sit this early: every answer gets X-Frame-Options, the card
    # guard's refusals and other early returns included.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Before sessions and CSRF: a request carrying a card number is refused untouched.
    "core.middleware.CardNumberGuardMiddleware",
    # A NUL in the path or query string is a 400 before a queryset sends it to PostgreSQL.
    "core.request_checks.NullByteGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language of a page: the browser's (Accept-Language, or the language cookie); pages
    # for a known customer (invitation, payment link) switch to the customer's own.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # Gives history rows written during a request its user (core/history.py).
    "simple_history.middleware.HistoryRequestMiddleware",
    # After OTPMiddleware: sends staff who passed only the password to verify or enrol.
    "spaces.middleware.StaffSecondFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Last: turns a login that axes refused into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL")}
# Services own their transactions: a provider call must never sit inside a request transaction
# that could roll back after money moved.
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": env.cache("CACHE_URL", default="locmemcache://"),
    # Per-process cache of rendered page fragments that are the same for every visitor.
    "fragments": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "f"},
}

# --- Auth -------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
# Axes first: it refuses a locked-out username or address before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# --- Staff accounts: second factor and login lockout -----------------------------------------
# Approvers, admins and superusers confirm a TOTP device before they see any admin page; staff
# who enrolled (clerks may) are always asked for it. On unless the environment says otherwise:
# local.py and test.py switch it off so demo users and test fixtures log in with a password.
STAFF_2FA_REQUIRED = env.bool("STAFF_2FA_REQUIRED", default=True)
OTP_TOTP_ISSUER = "Charging back office"
# Authenticator secrets are never shown again after enrolment, not even to superusers.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
# django-axes: this many failed logins lock the username and, separately, the client address
# (REMOTE_ADDR, as for the card registration rate limit) for the cool-off time after the last
# failure. AccessAttempt/AccessFailureLog/AccessLog rows are the audit trail.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_LOCKOUT_CALLABLE = "spaces.otp_views.lockout"
AXES_ENABLE_ACCESS_FAILURE_LOG = True
# A success must not wipe the address's failures: one known account would otherwise let an
# attacker reset the counter while guessing other accounts' passwords.
AXES_RESET_ON_SUCCESS = False

# --- I18n -------------------------------------------------------------------------------------
LANGUAGE_CODE = env("LANGUAGE_CODE", default="en")
LANGUAGES = [("en", "English"), ("de", "Deutsch"), ("ja", "日本語")]
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_TZ = True

# --- Static -----------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
# Plain storage here (tests and `make run` need no collectstatic); production.py switches to
# WhiteNoise's compressed, hashed names, which need `collectstatic` (the Procfile's release).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- Email ------------------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="billing@backoffice.invalid")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Payment provider (Stripe) ----------------------------------------------------------------
STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY")
STRIPE_PUBLISHABLE_KEY = env("STRIPE_PUBLISHABLE_KEY")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET")
# Only the API base and the keys differ between environments: development and tests point the
# official SDK at localstripe, production at Stripe.
STRIPE_API_BASE = env("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_JS_URL = env("STRIPE_JS_URL", default="https://js.stripe.com/v3/")
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=20.0)

# --- Hosted pages -----------------------------------------------------------------------------
# Absolute base of links we email to customers (registration invitations, payment links).
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
# Card registration POSTs allowed per client IP in each window (seconds), on the shared cache.
CARD_REGISTRATION_RATE_LIMIT = env.int("CARD_REGISTRATION_RATE_LIMIT", default=20)
CARD_REGISTRATION_RATE_WINDOW = env.int("CARD_REGISTRATION_RATE_WINDOW", default=600)

# --- Outbound webhooks (core/outbound.py) -----------------------------------------------------
# Plain http:// webhook URLs: refused unless this is on (local run and tests turn it on).
WEBHOOK_ALLOW_HTTP = env.bool("WEBHOOK_ALLOW_HTTP", default=False)
# Non-public networks webhooks may still reach, e.g. "127.0.0.0/8" for a receiver on this
# machine. Empty everywhere by default: loopback, private, link-local (cloud metadata),
# multicast and reserved addresses are refused when saved and again before each delivery.
WEBHOOK_ALLOWED_PRIVATE_NETWORKS = env.list("WEBHOOK_ALLOWED_PRIVATE_NETWORKS", default=[])

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL")
# Redis redelivers a message that was taken but not acknowledged (acks late: the worker died)
# only after the visibility timeout. Its default, one hour, would leave a killed worker's charge
# waiting that long. It must be longer than any task runs (a charge: one provider call of at most
# STRIPE_TIMEOUT_SECONDS; a loop such as the reconciler's stops taking items after
# TASK_DEADLINE_SECONDS, below), and is far shorter than an hour so lost work returns within
# minutes. A row marked queued is sent again only after it and five more minutes
# (core.tasks.requeue_after), so stopped workers leave one message per due row. The real-broker
# tests (tests/payments/test_real_broker.py) set a few seconds for the workers they start.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A loop inside one task (the reconciler, level dispatch, recurring generation) takes no further
# item after this many seconds and leaves the rest to its next run (core.tasks.Deadline): well
# under the visibility timeout, so a running task is never handed to a second worker.
TASK_DEADLINE_SECONDS = env.float("TASK_DEADLINE_SECONDS", default=60.0)
CELERY_TASK_IGNORE_RESULT = True
# A task that moves money is idempotent by design (database-guarded), so it is acknowledged
# only after it ran: a worker lost mid-task leaves the message to be redelivered, not dropped.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Synced into django-celery-beat's tables at beat start; staff can then edit them in the admin.
CELERY_BEAT_SCHEDULE = {
    "cards-redispatch-events": {
        "task": "cards.card_events_redispatch",
        "schedule": 60.0,
    },
    "billing-charge-due-issues": {
        "task": "billing.charge_issues_due_dispatch",
        "schedule": 60.0,
    },
    "billing-refunds-due": {
        "task": "billing.refunds_due_dispatch",
        "schedule": 60.0,
    },
    "billing-reconcile-attempts": {
        "task": "payments.charge_attempts_reconcile",
        "schedule": 120.0,
    },
    "payments-provider-events-retry": {
        "task": "payments.provider_events_retry",
        "schedule": 60.0,
    },
    "payments-outbound-events-sweep": {
        "task": "payments.outbound_events_sweep",
        "schedule": 60.0,
    },
    "chargeflows-run-due-levels": {
        "task": "chargeflows.flow_levels_due_dispatch",
        "schedule": 60.0,
    },
    "chargeflows-purge-flows": {
        "task": "chargeflows.charge_flows_purge",
        "schedule": 60 * 60.0,
    },
    "cards-expire-cards": {
        "task": "cards.payment_cards_expire",
        "schedule": 6 * 60 * 60.0,
    },
    "cards-expiry-warnings": {
        "task": "cards.payment_card_expiry_warnings_send",
        "schedule": 6 * 60 * 60.0,
    },
    "recurring-generate-due-lines": {
        "task": "recurring.recurring_lines_generate_due",
        "schedule": 15 * 60.0,
    },
    "recurring-fill-lines-without-card": {
        "task": "recurring.recurring_lines_fill_scan",
        "schedule": 60 * 60.0,
    },
    "recurring-card-reminders": {
        "task": "recurring.recurring_card_reminders_send",
        "schedule": 60 * 60.0,
    },
}
# Days before a card's expiry month ends its customer is emailed a link to register a new card,
# once per card (a space's own setting may say otherwise).
CARD_EXPIRY_WARNING_DAYS = env.int("CARD_EXPIRY_WARNING_DAYS", default=30)
# History pages show changes; reverting from them would bypass the services (core/history.py).
SIMPLE_HISTORY_REVERT_DISABLED = True
# Days before its charge date a recurring line still without a card emails the customer a
# registration link (a space's recurring settings may say otherwise).
RECURRING_CARD_REMINDER_DAYS = env.int("RECURRING_CARD_REMINDER_DAYS", default=7)

# --- Admin (django-unfold) --------------------------------------------------------------------
# The home page is the user's work queue and the sidebar counts it (config/work_queue.py).
UNFOLD = {
    "SITE_TITLE": "Charging back office",
    "SITE_HEADER": "Charging back office",
    "SITE_SYMBOL": "payments",
    "SHOW_VIEW_ON_SITE": False,
    "DASHBOARD_CALLBACK": "config.work_queue.dashboard_callback",
    "SIDEBAR": {
        "show_search": True,
        "show_all_applications": False,
        "navigation": "config.work_queue.sidebar_navigation",
    },
}

# --- Forms ------------------------------------------------------------------------------------
CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap5"
CRISPY_TEMPLATE_PACK = "bootstrap5"

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
# "json": one JSON object per line (core.logging.JsonLinesFormatter), what production defaults
# to for a log collector; "plain": readable lines, the default elsewhere.
LOG_FORMAT = env("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}.")
# Every record goes through a handler with the card-number mask (core/logging.py): Django's
# own loggers ("django", "django.server") and Celery's are emptied of the handlers their
# defaults give them and propagate to the root's (see also config/celery.py). A new handler
# must list the filter too (tests/core/test_logging.py checks).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"mask_card_numbers": {"()": "core.logging.CardNumberMaskingFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "core.logging.JsonLinesFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["mask_card_numbers"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": [], "level": "INFO", "propagate": True},
        "celery": {"handlers": [], "propagate": True},
        # The SDK logs request bodies at DEBUG; keep it quiet whatever LOG_LEVEL says.
        "stripe": {"level": "WARNING"},
    },
}
