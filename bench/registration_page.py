"""Requests per second of the hosted card registration page against a bare template view.

Measures `GET /register/<space_slug>/` (cards.views.register: space lookup, crispy form,
security headers) and `GET /bench/bare/` (a generic TemplateView of a tiny static template),
both served by one `manage.py runserver --nothreading` process with the same settings
(bench.settings: the local settings with DEBUG off, quiet logs, a throwaway SQLite database in
a temporary VAR_DIR). Rounds of each URL are interleaved and the median requests per second of
each is reported, with their ratio (the aim: the registration page at >= 0.7 of the bare view).

Run from the project root:

    .venv/bin/python bench/registration_page.py [--requests 300] [--rounds 5]

The figures depend on the machine; the ratio is the number to compare. It prints figures only:
nothing asserts a timing. The payment provider is not called, so localstripe need not run.
"""

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SPACE_SLUG = "bench"
PAGE_PATH = f"/register/{SPACE_SLUG}/"
BARE_PATH = "/bench/bare/"
PAGE_MARKER = b'id="registration-form"'
BARE_MARKER = b'id="bench-bare"'
AIM = 0.7
WARMUP = 50

CREATE_SPACE = f"""
from spaces.models import Space
space, _ = Space.objects.get_or_create(slug={SPACE_SLUG!r}, defaults={{"name": "Bench Shop"}})
if not space.public_card_registration:
    space.public_card_registration = True
    space.save(update_fields=["public_card_registration"])
"""


class BenchError(SystemExit):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    env["VAR_DIR"] = str(var_dir)
    # Explicit, so a DATABASE_URL in the developer's shell can never point the bench elsewhere.
    env["DATABASE_URL"] = f"sqlite:///{var_dir / 'db.sqlite3'}"
    env["CELERY_BROKER_URL"] = ""
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def manage(env: dict[str, str], *args: str, timeout: float) -> None:
    result = subprocess.run(
        [PY, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise BenchError(
            f"manage.py {args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with code {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise BenchError(f"server did not listen on 127.0.0.1:{port} within {seconds:.0f}s")


def fetch(conn: http.client.HTTPConnection, path: str, marker: bytes) -> None:
    """One GET on the shared connection; it reopens by itself when the server closed it."""
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    except (http.client.HTTPException, OSError):
        conn.close()
        raise
    if response.status != 200:
        raise BenchError(f"GET {path} answered {response.status}:\n{body[:2000]!r}")
    if marker not in body:
        raise BenchError(f"GET {path} lacks {marker.decode()}:\n{body[:2000]!r}")
    if response.will_close:
        conn.close()


def round_rps(conn, path: str, marker: bytes, requests: int, deadline: float) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        fetch(conn, path, marker)
        if time.monotonic() > deadline:
            raise BenchError("time limit reached; use fewer --requests or --rounds")
    return requests / (time.perf_counter() - start)


def measure(port: int, requests: int, rounds: int, deadline: float) -> dict[str, list[float]]:
    urls = {BARE_PATH: BARE_MARKER, PAGE_PATH: PAGE_MARKER}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for path, marker in urls.items():
            for _ in range(WARMUP):
                fetch(conn, path, marker)
        results: dict[str, list[float]] = {path: [] for path in urls}
        for _ in range(rounds):
            for path, marker in urls.items():
                results[path].append(round_rps(conn, path, marker, requests, deadline))
        return results
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per URL per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per URL")
    parser.add_argument(
        "--time-limit", type=float, default=100.0, help="give up after this many seconds"
    )
    args = parser.parse_args()
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be positive")
    deadline = time.monotonic() + args.time_limit

    var_dir = Path(tempfile.mkdtemp(prefix="bench-registration-"))
    env = bench_env(var_dir)
    server = None
    try:
        manage(env, "migrate", "--noinput", timeout=60)
        manage(env, "shell", "-c", CREATE_SPACE, timeout=30)

        port = free_port()
        log = var_dir / "server.log"
        with log.open("w") as log_file:
            server = subprocess.Popen(
                [
                    PY,
                    "manage.py",
                    "runserver",
                    f"127.0.0.1:{port}",
                    "--noreload",
                    "--nothreading",
                    "--skip-checks",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(port, server, log, seconds=30)

        results = measure(port, args.requests, args.rounds, deadline)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(var_dir, ignore_errors=True)

    page = statistics.median(results[PAGE_PATH])
    bare = statistics.median(results[BARE_PATH])
    ratio = page / bare
    print(f"registration page: {page:.1f} req/s (median of {args.rounds} rounds)")
    print(f"bare template view: {bare:.1f} req/s")
    print(f"ratio registration/bare: {ratio:.2f} (aim >= {AIM})")
    pairs = zip(results[PAGE_PATH], results[BARE_PATH], strict=True)
    rounds = ", ".join(f"{p:.0f}/{b:.0f}" for p, b in pairs)
    print(f"per round, registration/bare req/s: {rounds}")


if __name__ == "__main__":
    main()
