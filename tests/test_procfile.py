"""The Procfile's web, worker and beat commands, run as production runs them (production
settings, JSON logs) against the suite's PostgreSQL and a Redis database of their own.

- Every line they write while starting is a JSON log line: no Celery banner, no gunicorn
  plain text, so a log collector parses the whole stream.
- The web process serves static files brotli-compressed to a client that accepts it
  (whitenoise[brotli]; collectstatic writes the .br files).
- gunicorn opens no control socket: by default every gunicorn of a user on a host shares
  `$XDG_RUNTIME_DIR/gunicorn.ctl` (or `~/.gunicorn/gunicorn.ctl`), so one instance would take
  another's over.
"""

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings

from tests.test_make_run import TEST_ONLY, _free_port, _Output
from tests.test_make_run_prod_like import _redis_url

ROOT = Path(__file__).resolve().parent.parent


def _procfile() -> dict[str, str]:
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            processes[name.strip()] = command.strip()
    return processes


@pytest.fixture
def own_redis():
    url = _redis_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def production_env(tmp_path, own_redis):
    """The environment a platform gives the Procfile's processes, pointed at the test database
    (the beat's scheduler reads and writes its tables; transactional tests flush them)."""
    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in TEST_ONLY}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
        f"{db['NAME']}",
        CELERY_BROKER_URL=own_redis,
        CACHE_URL=own_redis.replace("redis://", "rediscache://", 1),
        STRIPE_API_BASE=settings.STRIPE_API_BASE,
        STRIPE_SECRET_KEY=settings.STRIPE_SECRET_KEY,
        STRIPE_PUBLISHABLE_KEY=settings.STRIPE_PUBLISHABLE_KEY,
        STRIPE_WEBHOOK_SECRET=settings.STRIPE_WEBHOOK_SECRET,
        STATIC_ROOT=str(tmp_path / "static"),
        # Where gunicorn would put its control socket by default.
        HOME=str(home),
        XDG_RUNTIME_DIR=str(runtime),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONUNBUFFERED="1",
    )
    if os.geteuid() == 0:
        # This machine runs the suite as root; production runs Celery as an unprivileged user,
        # where Celery does not print its plain-text "superuser privileges" warning.
        env["PYTHONWARNINGS"] = "ignore:You're running the worker with superuser privileges"
    return env


def _start(name: str, env: dict[str, str]) -> tuple[subprocess.Popen, _Output]:
    proc = subprocess.Popen(
        shlex.split(_procfile()[name]),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, _Output(proc.stdout)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL to the group. The kill is for beat: stopped while its scheduler is
    still being set up, its SIGTERM handler can wait forever (a Celery quirk); this test is
    about what the processes write while starting, not about how they stop."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _get_when_served(url: str, proc: subprocess.Popen, out: _Output) -> requests.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, out.text
            time.sleep(0.2)


def _not_json(lines: list[str]) -> list[str]:
    bad = []
    for line in lines:
        if not line.strip():
            bad.append(line)
            continue
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    return bad


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("process", "started"),
    [("worker", r'"celery@\S+ ready\."'), ("beat", r'"beat: Starting\.\.\."')],
)
def test_celery_processes_start_with_json_log_lines_only(production_env, process, started):
    proc, out = _start(process, production_env)
    try:
        out.wait_for(started, proc, 90)
        # Everything written up to "ready" / "Starting": the banner would be among it.
        written = list(out.lines)
    finally:
        _stop(proc)

    assert written and _not_json(written) == [], out.text


def test_web_serves_brotli_static_files_logs_json_and_opens_no_control_socket(
    production_env, tmp_path
):
    # The release step's static half (its migrate has nothing to do on the test database).
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=production_env,
        check=True,
    )
    port = _free_port()
    production_env.update(HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1")
    proc, out = _start("web", production_env)
    try:
        out.wait_for(r"Booting worker", proc, 60)
        base = f"http://127.0.0.1:{port}"
        assert _get_when_served(f"{base}/healthz/live", proc, out).status_code == 200
        css = "/static/" + _manifest_name("cards/hosted.css", production_env)
        # As the TLS-terminating proxy sends it (production redirects plain http to https).
        https = {"X-Forwarded-Proto": "https"}
        brotli, gzip, plain = (
            requests.get(f"{base}{css}", headers={**https, "Accept-Encoding": enc}, timeout=10)
            for enc in ("br, gzip", "gzip", "identity")
        )
        sockets = [str(p) for p in tmp_path.rglob("*") if p.is_socket() or p.suffix == ".ctl"]
        written = list(out.lines)
    finally:
        _stop(proc)

    # Brotli to a client that accepts it, gzip to one that accepts only gzip, and the same CSS.
    assert brotli.status_code == 200 and brotli.headers["Content-Encoding"] == "br"
    assert gzip.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain.headers
    assert int(brotli.headers["Content-Length"]) < int(gzip.headers["Content-Length"])
    assert brotli.headers["Vary"] == "Accept-Encoding"
    assert sockets == []
    assert written and _not_json(written) == [], out.text


def _manifest_name(name: str, env: dict[str, str]) -> str:
    manifest = json.loads((Path(env["STATIC_ROOT"]) / "staticfiles.json").read_text())
    return manifest["paths"][name]
