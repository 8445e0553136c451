"""`make run`: the whole back office on this machine with demo data, no services needed.

Migrates the embedded SQLite database, loads demo data, then starts localstripe (state in var/),
a Celery worker and beat (embedded broker unless CELERY_BROKER_URL is set) and the web server.
Ctrl-C stops every process it started.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("VAR_DIR") or ROOT / "var")
PY = sys.executable
WEB_PORT = int(os.environ.get("PORT", "8000"))
LOCALSTRIPE_PORT = int(os.environ.get("LOCALSTRIPE_PORT", "8420"))


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, proc: subprocess.Popen, name: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with code {proc.returncode}; see its output above.")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not listen on 127.0.0.1:{port} within {seconds:.0f}s.")


def main() -> None:
    VAR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    env["LOCALSTRIPE_PORT"] = str(LOCALSTRIPE_PORT)
    # Links in emails (invitations, payment links) point at this run's web server.
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{WEB_PORT}")
    env.setdefault("PYTHONUNBUFFERED", "1")

    for port, what, variable in (
        (WEB_PORT, "web server", "PORT"),
        (LOCALSTRIPE_PORT, "localstripe", "LOCALSTRIPE_PORT"),
    ):
        if not port_is_free(port):
            raise SystemExit(
                f"Port {port} for the {what} is taken (another `make run`?). "
                f"Stop it or choose another with {variable}=NNNN make run."
            )

    manage = [PY, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True)

    procs: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        # Each child leads its own process group so Ctrl-C here can stop it and its children.
        proc = subprocess.Popen(args, env=env, cwd=ROOT, start_new_session=True)
        procs.append((name, proc))
        return proc

    def stop_all(*_):
        # SIGTERM to each leader lets it stop its own children (Celery's pool) cleanly; what
        # is left of a group afterwards, or a leader stuck past 10 s, is killed.
        for _name, proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for name, proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop within 10s; killing it.")
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        print("\nAll processes stopped.")
        sys.exit(0)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)

    try:
        localstripe = start(
            "localstripe",
            [
                PY,
                str(ROOT / "scripts" / "localstripe_server.py"),
                "--port",
                str(LOCALSTRIPE_PORT),
                "--state",
                str(VAR / "localstripe.pickle"),
            ],
        )
        wait_for_port(LOCALSTRIPE_PORT, localstripe, "localstripe")
        # Demo data registers a demo card with localstripe, so it runs once that is up.
        subprocess.run([*manage, "seed_demo"], env=env, check=True)
        # The provider's events (payment_intent.*, payment_method.*) reach /webhooks/stripe.
        subprocess.run(
            [*manage, "localstripe_webhooks", f"http://127.0.0.1:{WEB_PORT}/webhooks/stripe"],
            env=env,
            check=True,
        )
        celery = [PY, "-m", "celery", "-A", "config"]
        start("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"])
        start(
            "beat",
            [*celery, "beat", "--loglevel", "INFO", "--schedule", str(VAR / "celerybeat-schedule")],
        )
        web = start(
            "web", [*manage, "runserver", f"127.0.0.1:{WEB_PORT}", "--noreload", "--skip-checks"]
        )
        wait_for_port(WEB_PORT, web, "web server")
    except BaseException:
        stop_all()
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
    while True:
        for name, proc in procs:
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; stopping the rest.")
                stop_all()
        time.sleep(1)


if __name__ == "__main__":
    main()
