"""`make run-prod-like`: scripts/run_prod_like.py with gunicorn, production settings, and the
PostgreSQL and Redis the environment names.

Against the suite's PostgreSQL server (a database of its own, created and dropped here) and
Redis (a database number of its own, flushed before and after). It must pass readiness, let a
printed demo user log in, write JSON access log lines with the request id and no card number,
and stop every process it started on Ctrl-C. A missing variable is a clear error.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
import requests
from django.conf import settings

from tests.test_make_run import (
    TEST_ONLY,
    _children,
    _children_of,
    _cmdline,
    _free_port,
    _Output,
    _running,
)

ROOT = Path(__file__).resolve().parent.parent


def _redis_url() -> str:
    """The suite's Redis with a database number of its own (6, or 7 if the suite uses 6)."""
    suite = urlsplit(settings.CELERY_BROKER_URL)
    if suite.scheme not in {"redis", "rediss"}:
        pytest.fail(f"the suite's broker {settings.CELERY_BROKER_URL} is not Redis")
    used = {
        suite.path.strip("/") or "0",
        urlsplit(os.environ.get("CACHE_URL", "")).path.strip("/") or "0",
    }
    db = next(str(n) for n in range(6, 16) if str(n) not in used)
    return urlunsplit(suite._replace(path=f"/{db}"))


@pytest.fixture
def own_database():
    """A fresh PostgreSQL database on the suite's server, dropped afterwards."""
    suite = settings.DATABASES["default"]
    name = f"prodlike_{uuid.uuid4().hex[:10]}"
    server = {
        "host": suite["HOST"] or "127.0.0.1",
        "port": suite["PORT"] or 5432,
        "user": suite["USER"],
        "password": suite["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    auth = suite["USER"] + (f":{suite['PASSWORD']}" if suite["PASSWORD"] else "")
    yield f"postgres://{auth}@{server['host']}:{server['port']}/{name}"
    with psycopg.connect(**server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def own_redis():
    url = _redis_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


def _environment(tmp_path, web_port, stripe_port, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TEST_ONLY}
    env.update(
        VAR_DIR=str(tmp_path), PORT=str(web_port), LOCALSTRIPE_PORT=str(stripe_port), **extra
    )
    return env


def test_missing_services_are_a_clear_error(tmp_path):
    env = _environment(tmp_path, _free_port(), _free_port())
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_prod_like.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert "set DATABASE_URL (e.g. postgres://" in done.stderr
    assert "CELERY_BROKER_URL" in done.stderr and "CACHE_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_make_run_prod_like_serves_with_gunicorn_and_stops_cleanly(
    tmp_path, own_database, own_redis
):
    web_port, stripe_port = _free_port(), _free_port()
    env = _environment(
        tmp_path,
        web_port,
        stripe_port,
        DATABASE_URL=own_database,
        CELERY_BROKER_URL=own_redis,
        CACHE_URL=own_redis.replace("redis://", "rediscache://", 1),
    )
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run_prod_like.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _Output(proc.stdout)
    started: set[int] = set()
    try:
        out.wait_for(r"Back office:\s+http://127\.0\.0\.1:\d+/admin/", proc, 180)
        out.wait_for(r"celery@\S+ ready", proc, 60)
        started = {p for child in _children_of(proc.pid) for p in _children(child) | {child}}
        assert "plain http on 127.0.0.1" in out.text
        assert any("gunicorn" in _cmdline(pid) for pid in started)
        base = f"http://127.0.0.1:{web_port}"

        ready = requests.get(f"{base}/healthz/ready", timeout=15)
        assert ready.status_code == 200, ready.text
        assert all(check["ok"] for check in ready.json()["checks"].values())
        assert requests.get(f"{base}/healthz/live", timeout=15).json() == {"status": "ok"}
        assert requests.get(f"{base}/healthz", timeout=15).status_code == 200
        provider = requests.get(f"{base}/healthz/provider", timeout=15)
        assert provider.json()["checks"] == {"payment_provider": {"ok": True}}

        # Production settings: DEBUG off (a 404 page without Django's debug listing), static
        # files hashed and compressed by WhiteNoise.
        missing = requests.get(f"{base}/no-such-page", timeout=10)
        assert missing.status_code == 404 and "URLconf" not in missing.text
        page = requests.get(f"{base}/register/demo/", timeout=10)
        css = re.search(r"/static/cards/hosted\.[0-9a-f]{12}\.css", page.text).group()
        static = requests.get(f"{base}{css}", headers={"Accept-Encoding": "gzip"}, timeout=10)
        assert static.status_code == 200 and static.headers["Content-Encoding"] == "gzip"
        assert "immutable" in static.headers["Cache-Control"]

        password = out.wait_for(r"clerk\s+password: (\S+)", proc, 1).group(1)
        session = requests.Session()
        login_page = session.get(f"{base}/admin/login/", timeout=10)
        assert login_page.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        index = session.post(
            f"{base}/admin/login/?next=/admin/",
            data={"username": "clerk", "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base}/admin/login/"},
            timeout=10,
        )
        assert index.status_code == 200 and index.url == f"{base}/admin/", index.url
        assert "Demo Space" in session.get(f"{base}/admin/spaces/space/", timeout=10).text

        # gunicorn's access log: JSON lines with the request id, and a card number in the
        # path masked like everywhere else.
        refused = requests.get(f"{base}/register/4242424242424242/", timeout=10)
        assert refused.status_code == 400
        request_id = refused.headers["X-Request-ID"]
        access = out.wait_for(rf'{{[^\n]*"gunicorn\.access"[^\n]*{request_id}[^\n]*', proc, 10)
        access = json.loads(access.group())
        # The guard's own warning carries the same id.
        assert re.search(rf'"Refused a request: card_number_refused.*"{request_id}"', out.text)
        assert access["level"] == "INFO" and '" 400 ' in access["message"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()

    assert "All processes stopped." in out.text
    assert "4242424242424242" not in out.text and "4242 4242" not in out.text
    time.sleep(0.5)
    alive = {pid: _cmdline(pid) for pid in started if _running(pid)}
    assert started and not alive, f"left running: {alive}"
