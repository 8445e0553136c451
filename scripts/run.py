"""`make run`: the whole back office on this machine with demo data, no services needed.

Migrates the embedded SQLite database, loads demo data, then starts localstripe (state in var/),
a Celery worker and beat (embedded broker unless CELERY_BROKER_URL is set) and the web server.
Ctrl-C stops every process it started. `make run-prod-like` (scripts/run_prod_like.py) starts
the same stack the way production runs it.
"""

import os
from pathlib import Path

from processes import MANAGE, ROOT, Processes, require_free_ports, wait_for_port

VAR = Path(os.environ.get("VAR_DIR") or ROOT / "var")
WEB_PORT = int(os.environ.get("PORT", "8000"))
LOCALSTRIPE_PORT = int(os.environ.get("LOCALSTRIPE_PORT", "8420"))


def main() -> None:
    VAR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    env["LOCALSTRIPE_PORT"] = str(LOCALSTRIPE_PORT)
    # Links in emails (invitations, payment links) point at this run's web server.
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{WEB_PORT}")
    env.setdefault("PYTHONUNBUFFERED", "1")

    require_free_ports(
        [
            (WEB_PORT, "web server", "PORT"),
            (LOCALSTRIPE_PORT, "localstripe", "LOCALSTRIPE_PORT"),
        ],
        "make run",
    )

    processes = Processes(env)
    processes.run([*MANAGE, "migrate", "--noinput", "-v", "0"])
    try:
        processes.start_localstripe(LOCALSTRIPE_PORT, VAR / "localstripe.pickle")
        processes.seed_demo(WEB_PORT)
        processes.start_celery(VAR / "celerybeat-schedule")
        web = processes.start(
            "web", [*MANAGE, "runserver", f"127.0.0.1:{WEB_PORT}", "--noreload", "--skip-checks"]
        )
        wait_for_port(WEB_PORT, web, "web server")
    except BaseException:
        processes.stop_all()
        raise

    print(
        "\n"
        f"  Back office:  http://127.0.0.1:{WEB_PORT}/admin/\n"
        f"  Card page:    http://127.0.0.1:{WEB_PORT}/register/demo/\n"
        f"  Health:       http://127.0.0.1:{WEB_PORT}/healthz\n"
        f"  localstripe:  http://127.0.0.1:{LOCALSTRIPE_PORT}\n"
        f"  Demo logins are listed above (also in {VAR / 'demo-credentials.json'}).\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    processes.supervise()


if __name__ == "__main__":
    main()
