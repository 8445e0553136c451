"""gunicorn's configuration: `gunicorn -c config/gunicorn.conf.py config.wsgi` (see Procfile).

Read from the environment only (the settings are not imported: this runs in gunicorn's master).
"""

import multiprocessing
import os

# Where the TLS-terminating proxy (or the platform's router) sends requests.
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"

# Processes: WEB_CONCURRENCY (the variable platforms set), else 2 × cores + 1, capped: each
# process holds its own database connections, and PostgreSQL's max_connections is finite.
workers = int(os.environ.get("WEB_CONCURRENCY") or min(2 * multiprocessing.cpu_count() + 1, 9))
# Threads per process: a request spends most of its time waiting on the provider or the
# database, so a few threads keep a process busy without more memory. Django, psycopg and the
# Stripe SDK (a session per thread) are thread-safe.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))

# A worker silent for longer than `timeout` is killed. It must outlast a provider call: killing
# one mid-call leaves a charge's outcome unknown until the reconciler asks the provider. A
# request makes at most a few provider calls (card registration: retrieve, find or create,
# attach), each bounded by STRIPE_TIMEOUT_SECONDS; two slow ones plus a margin fit.
_provider_timeout = float(os.environ.get("STRIPE_TIMEOUT_SECONDS", "20"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 2 * _provider_timeout + 20)
# On SIGTERM (a deploy, a scale-down) workers stop accepting and finish what they serve for up
# to this long, so a charge that is being approved completes instead of being cut off.
graceful_timeout = timeout
keepalive = 5
# Recycle processes now and then (jittered, so not all at once) to bound slow memory growth.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = max_requests // 10

# Recent gunicorn opens a control socket (for `gunicornc`) at $XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl: one path for every gunicorn of that user on the host, so a second
# instance (another app, a deploy overlapping the old one) takes the socket over and commands
# meant for one reach the other. Nothing here uses it; signals (HUP, TERM, TTIN) do the job.
control_socket_disable = True

# Access and error log to stdout/stderr, through the same card-number mask (and, in
# production, the same JSON lines) as the application's logs: a request line holds the path and
# query string, where a card number typed by mistake would otherwise be written.
accesslog = "-"
# gunicorn's default line plus the request id our middleware answered with (X-Request-ID), to
# find the application's lines for a request.
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-request-id}o)s'
)
errorlog = "-"
_format = os.environ.get("LOG_FORMAT") or (
    "json"
    if os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.production").endswith("production")
    else "plain"
)
logconfig_dict = {
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
            "stream": "ext://sys.stdout",
            "formatter": _format,
            "filters": ["mask_card_numbers"],
        },
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
