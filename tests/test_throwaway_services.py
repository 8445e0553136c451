"""The fresh-machine path of tests/throwaway_services.py, proven in a pytest session of its own.

The inner session runs with DATABASE_URL, CELERY_BROKER_URL, CACHE_URL and CI unset and the
"default" ports (TEST_POSTGRES_PORT, TEST_REDIS_PORT) pointed at loopback ports where nothing
listens, so it must start its own PostgreSQL and Redis, pass a database test against them and
leave nothing behind. The machine's own servers are never touched: the inner test checks it
talks to the wheels' PostgreSQL 18 and Redis 6.2, and the outer test checks the servers it
reported are gone afterwards.
"""

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNSET = {"DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "CI", "DJANGO_SETTINGS_MODULE"}

INNER_TEST = """
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection


@pytest.mark.django_db
def test_database_and_redis_are_the_throwaway_servers():
    User.objects.create(username="fresh-machine")
    assert User.objects.filter(username="fresh-machine").count() == 1
    assert connection.pg_version // 10000 == 18  # the wheel's server, not the machine's
    assert settings.DATABASES["default"]["NAME"] == "test_test"

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    assert broker.info("server")["redis_version"].startswith("6.2.")
    cache.set("fresh-machine", 42)
    assert cache.get("fresh-machine") == 42
"""


def _nothing_listening_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _inner_session(tmp_path, **extra):
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(textwrap.dedent(INNER_TEST))
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(
        TEST_POSTGRES_PORT=str(_nothing_listening_port()),
        TEST_REDIS_PORT=str(_nothing_listening_port()),
        **extra,
    )
    assert not _answers(int(env["TEST_POSTGRES_PORT"]))
    assert not _answers(int(env["TEST_REDIS_PORT"]))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nomigrations"]
        + ["--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(test_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )


def test_a_session_without_services_starts_throwaway_ones_and_removes_them(tmp_path):
    done = _inner_session(tmp_path)
    output = done.stdout + done.stderr

    assert done.returncode == 0, output
    assert re.search(r"\b1 passed\b", done.stdout), output
    started = re.search(
        r"throwaway PostgreSQL pid (\d+) on 127\.0\.0\.1:(\d+), "
        r"Redis pid (\d+) on 127\.0\.0\.1:(\d+) in (\S+) \(nothing answered",
        done.stdout,
    )
    assert started, output
    pg_pid, pg_port, redis_pid, redis_port = map(int, started.groups()[:4])
    folder = Path(started.group(5))
    assert folder.parent == ROOT / "var" / "test-services"
    assert f"stopped and removed: throwaway PostgreSQL pid {pg_pid}" in done.stderr
    assert not _running(pg_pid) and not _running(redis_pid)
    assert not _answers(pg_port) and not _answers(redis_port)
    assert not folder.exists()


def test_with_ci_nothing_is_started_and_the_run_fails(tmp_path):
    done = _inner_session(tmp_path, CI="true")

    assert done.returncode != 0
    assert "CI=true: nothing answers on 127.0.0.1 for PostgreSQL and Redis" in done.stderr
    assert "throwaway PostgreSQL pid" not in done.stdout + done.stderr
    assert "passed" not in done.stdout
