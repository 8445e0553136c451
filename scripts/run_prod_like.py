"""`make run-prod-like`: the back office as production runs it, on this machine.

Production settings (DEBUG off, static files collected and served hashed and compressed by
WhiteNoise, JSON log lines), gunicorn with config/gunicorn.conf.py, a Celery worker and the one
beat, against the PostgreSQL, Redis broker and Redis cache the environment names
(DATABASE_URL, CELERY_BROKER_URL, CACHE_URL: required). Differences from production, all for a
local run: plain http on 127.0.0.1 (PLAIN_HTTP_ON_LOOPBACK), localstripe as the provider, a
SECRET_KEY generated once into var/, demo data seeded into that database. Ctrl-C stops
everything.
"""

import os
import secrets
from pathlib import Path

from processes import MANAGE, PY, ROOT, Processes, require_free_ports, wait_for_port

VAR = Path(os.environ.get("VAR_DIR") or ROOT / "var")
WEB_PORT = int(os.environ.get("PORT", "8000"))
LOCALSTRIPE_PORT = int(os.environ.get("LOCALSTRIPE_PORT", "8420"))
REQUIRED = {
    "DATABASE_URL": "postgres://USER@HOST:5432/NAME",
    "CELERY_BROKER_URL": "redis://HOST:6379/0",
    "CACHE_URL": "rediscache://HOST:6379/1",
}


def secret_key() -> str:
    """Generated on the first run and kept (var/ is not committed): sessions survive restarts."""
    path = VAR / "prod-like-secret-key"
    if not path.is_file():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(50))
    return path.read_text().strip()


def main() -> None:
    missing = [name for name in REQUIRED if not os.environ.get(name, "").strip()]
    if missing:
        raise SystemExit(
            "make run-prod-like uses the PostgreSQL and Redis you name; set "
            + ", ".join(f"{name} (e.g. {REQUIRED[name]})" for name in missing)
            + ". `make run` needs none of them."
        )
    VAR.mkdir(exist_ok=True)
    localstripe = f"http://127.0.0.1:{LOCALSTRIPE_PORT}"
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DEBUG="false",
        PLAIN_HTTP_ON_LOOPBACK="true",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CSRF_TRUSTED_ORIGINS=f"http://127.0.0.1:{WEB_PORT},http://localhost:{WEB_PORT}",
        HOST="127.0.0.1",
        PORT=str(WEB_PORT),
        STRIPE_API_BASE=localstripe,
        STRIPE_JS_URL=f"{localstripe}/js.stripe.com/v3/",
        STRIPE_SECRET_KEY="sk_test_localstripe",
        STRIPE_PUBLISHABLE_KEY="pk_test_localstripe",
        STRIPE_WEBHOOK_SECRET="whsec_localstripe",
        LOCALSTRIPE_PORT=str(LOCALSTRIPE_PORT),
        VAR_DIR=str(VAR),
    )
    env.setdefault("SECRET_KEY", secret_key())
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{WEB_PORT}")
    env.setdefault("STATIC_ROOT", str(VAR / "staticfiles"))
    env.setdefault("WEB_CONCURRENCY", "2")
    env.setdefault("PYTHONUNBUFFERED", "1")

    require_free_ports(
        [
            (WEB_PORT, "web server", "PORT"),
            (LOCALSTRIPE_PORT, "localstripe", "LOCALSTRIPE_PORT"),
        ],
        "make run-prod-like",
    )

    processes = Processes(env)
    # The Procfile's release step.
    processes.run([*MANAGE, "migrate", "--noinput", "-v", "0"])
    processes.run([*MANAGE, "collectstatic", "--noinput", "-v", "0"])
    try:
        processes.start_localstripe(LOCALSTRIPE_PORT, VAR / "localstripe-prod-like.pickle")
        processes.seed_demo(WEB_PORT)
        processes.start_celery(VAR / "celerybeat-schedule-prod-like", quiet=True)
        web = processes.start(
            "web",
            [PY, "-m", "gunicorn", "--config", str(ROOT / "config" / "gunicorn.conf.py")]
            + ["config.wsgi"],
        )
        wait_for_port(WEB_PORT, web, "web server (gunicorn)", seconds=60)
    except BaseException:
        processes.stop_all()
        raise

    print(
        "\n"
        "  Production settings, gunicorn, PostgreSQL and Redis from the environment.\n"
        "  For this local run only: plain http on 127.0.0.1 (no https redirect, cookies not\n"
        "  https-only), localstripe as the provider, demo data in that database.\n"
        f"  Back office:  http://127.0.0.1:{WEB_PORT}/admin/\n"
        f"  Card page:    http://127.0.0.1:{WEB_PORT}/register/demo/\n"
        f"  Health:       http://127.0.0.1:{WEB_PORT}/healthz/ready "
        f"(liveness: /healthz/live, provider: /healthz/provider)\n"
        f"  localstripe:  http://127.0.0.1:{LOCALSTRIPE_PORT}\n"
        f"  Demo logins are listed above (also in {VAR / 'demo-credentials.json'}).\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    processes.supervise()


if __name__ == "__main__":
    main()
