"""Web load on the production-like stack: the public card page and the charging API.

Starts scripts/run_prod_like.py (gunicorn with config/gunicorn.conf.py, production settings, a
Celery worker and the beat, localstripe) against a PostgreSQL database of its own and a Redis
database number, then drives it from N concurrent clients for a fixed time on loopback:

- GET /register/<slug>/                 the page a customer opens to register a card
- POST /api/v1/charge-issues            another system starting a charging issue

Each client alternates the two (GET, POST, GET, POST, ...) on its own connection and API key:
the API limits each key to billing.api.RATE_LIMIT requests a minute, as it should, so the bench
plays N other systems with one key each rather than one system flooding a single key. Every
POST carries a fresh Idempotency-Key (a bare UUID, as the API's docstring suggests; the
reference is "<run tag>/<that UUID>"); every RETRY_EVERY-th POST instead repeats the client's
previous key and body, as a client retrying after a lost answer would, and must get the same
issue back (Idempotent-Replayed).

It prints requests per second, p50/p99 latency and errors per endpoint (an error: a transport
failure, a timeout, or any status other than 200 for the page and 201 for the API), then checks
in the database that no request was lost or doubled: every 201 names an issue that exists with
its key's reference, every Idempotency-Key answered 201 is exactly one issue, a replay names
the same issue as the first answer, and no issue exists for a key that got no 201 (reported as
"created but unanswered": a timeout after the commit). It exits 1 if any check fails.

Run from the project root (both URLs are flushed or created here and cleaned up at the end):

    .venv/bin/python bench/web_load.py [--clients 50] [--seconds 60]
        [--database-url postgres://postgres@127.0.0.1:5432/bench_web_load]
        [--redis-url redis://127.0.0.1:6379/14] [--workers 2]

Bounded: loopback only, --seconds of load (each request times out after --timeout seconds) and
at most --max-requests requests in all. The database is created here (it must not exist) and
dropped at the end; the Redis database is flushed before and after.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import charge_batch as batch  # noqa: E402 - run as a script from the project root

SLUG = "demo"
CUSTOMER = "0283759"  # seed_demo's customer with a card in the demo space
RETRY_EVERY = 10

KEYS_SCRIPT = """
import json
from billing.api_services import api_key_create
from django.contrib.auth import get_user_model
from spaces.models import Space
space = Space.objects.get(slug=%r)
admin = get_user_model().objects.get(username="admin")  # seed_demo's space admin
print("KEYS=" + json.dumps(
    [api_key_create(space=space, name=f"web load {i}", acting_user=admin)[1] for i in range(%d)]
))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Output:
    """The stack's merged stdout, read on a thread so its pipe never fills."""

    def __init__(self, stream):
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)

    def wait_for(self, pattern: str, proc: subprocess.Popen, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.lines)):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = "".join(self.lines[-40:])
        raise batch.BenchError(f"the stack did not print {pattern!r}; last output:\n{tail}")


def stack_start(args, var_dir: Path, web_port: int) -> tuple[subprocess.Popen, Output, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DATABASE_URL=args.database_url,
        CELERY_BROKER_URL=args.redis_url,
        CACHE_URL=args.redis_url.replace("redis://", "rediscache://", 1),
        VAR_DIR=str(var_dir),
        PORT=str(web_port),
        LOCALSTRIPE_PORT=str(free_port()),
        WEB_CONCURRENCY=str(args.workers),
    )
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run_prod_like.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out = Output(proc.stdout)
    out.wait_for(r"Back office:\s+http://127\.0\.0\.1:\d+/admin/", proc, 240)
    return proc, out, env


def stack_stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # run_prod_like stops its children on Ctrl-C
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def api_keys_create(env: dict, count: int) -> list[str]:
    """One key per client, made by the service the admin uses (audited like any other)."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", KEYS_SCRIPT % (SLUG, count)],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.local"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"^KEYS=(.*)$", done.stdout, re.M)
    if done.returncode or not match:
        raise batch.BenchError(f"could not create API keys:\n{done.stdout}\n{done.stderr}")
    return json.loads(match.group(1))


class Results:
    def __init__(self):
        self.latency = {"page": [], "api": []}
        self.errors = {"page": {}, "api": {}}
        self.samples: dict[str, str] = {}  # the first answer of each kind of error, for the report
        self.answers: dict[str, set[int]] = {}  # Idempotency-Key -> issue ids its 201s named
        self.replays = 0
        self.sent = 0

    def error(self, endpoint: str, what: str, body: bytes = b"") -> None:
        self.errors[endpoint][what] = self.errors[endpoint].get(what, 0) + 1
        self.samples.setdefault(f"{endpoint} {what}", body[:300].decode(errors="replace"))


async def client(base: str, api_key: str, tag: str, deadline: float, args, results: Results):
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=args.timeout)
    headers = {"Authorization": f"Bearer {api_key}"}
    previous: str | None = None
    posts = 0
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        while time.monotonic() < deadline and results.sent < args.max_requests:
            # The card page.
            results.sent += 1
            start = time.perf_counter()
            try:
                async with session.get(f"{base}/register/{SLUG}/") as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            results.latency["page"].append(time.perf_counter() - start)
            if status != 200:
                results.error("page", str(status))
            if time.monotonic() >= deadline:
                break

            # The API: a fresh key, or every RETRY_EVERY-th time a retry of the previous one.
            posts += 1
            retry = previous is not None and posts % RETRY_EVERY == 0
            key = previous if retry else str(uuid.uuid4())
            body = {"customer": CUSTOMER, "amount": "12.34", "reference": f"{tag}/{key}"}
            results.sent += 1
            start = time.perf_counter()
            try:
                async with session.post(
                    f"{base}/api/v1/charge-issues",
                    json=body,
                    headers={**headers, "Idempotency-Key": key},
                ) as response:
                    payload = await response.read()
                    status = response.status
                    replayed = response.headers.get("Idempotent-Replayed") == "true"
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, payload, replayed = type(exc).__name__, b"", False
            results.latency["api"].append(time.perf_counter() - start)
            if status == 201:
                results.answers.setdefault(key, set()).add(json.loads(payload)["id"])
                if retry:
                    if replayed:
                        results.replays += 1
                    else:
                        results.error("api", "retry not replayed")
            else:
                results.error("api", str(status), payload)
            previous = key


async def drive(base: str, keys: list[str], tag: str, args) -> tuple[Results, float]:
    results = Results()
    started = time.monotonic()
    deadline = started + args.seconds
    await asyncio.gather(*(client(base, key, tag, deadline, args, results) for key in keys))
    return results, time.monotonic() - started


def issues_in_database(database_url: str, tag: str) -> dict[str, list[int]]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT external_reference, id FROM billing_chargeissue"
            " WHERE source = 'api' AND external_reference LIKE %s",
            [f"{tag}/%"],
        ).fetchall()
    issues: dict[str, list[int]] = {}  # Idempotency-Key -> issues with its reference
    for reference, pk in rows:
        issues.setdefault(reference.removeprefix(f"{tag}/"), []).append(pk)
    return issues


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(args, results: Results, elapsed: float, issues: dict[str, list[int]]) -> bool:
    print(
        f"\n{args.clients} clients for {elapsed:.1f} s against gunicorn "
        f"({args.workers} workers), production settings, PostgreSQL, Redis; loopback\n"
    )
    print(f"{'endpoint':<28}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  errors")
    for endpoint, label in (
        ("page", f"GET /register/{SLUG}/"),
        ("api", "POST /api/v1/charge-issues"),
    ):
        latency = results.latency[endpoint]
        errors = results.errors[endpoint]
        print(
            f"{label:<28}{len(latency):>9}{len(latency) / elapsed:>9.1f}"
            f"{percentile(latency, 50) * 1000:>9.1f}{percentile(latency, 99) * 1000:>9.1f}"
            f"  {sum(errors.values())} {errors if errors else ''}"
        )

    answered = results.answers
    problems = []
    doubled = {key: ids for key, ids in issues.items() if len(ids) > 1}
    split = {key: ids for key, ids in answered.items() if len(ids) > 1}
    lost = {key: ids for key, ids in answered.items() if sorted(ids) != sorted(issues.get(key, []))}
    unanswered = set(issues) - set(answered)
    if doubled:
        problems.append(f"{len(doubled)} keys with more than one issue: {list(doubled)[:5]}")
    if split:
        problems.append(f"{len(split)} keys whose 201s named different issues")
    if lost:
        problems.append(f"{len(lost)} answered keys whose issue is not in the database as named")
    print(
        f"\nIdempotency-Keys answered 201: {len(answered)}; issues in the database for this run: "
        f"{sum(len(ids) for ids in issues.values())}; retries replayed: {results.replays}; "
        f"keys with two issues: {len(doubled)}; 201s not in the database: {len(lost)}; "
        f"created but unanswered: {len(unanswered)}"
    )
    for what, body in results.samples.items():
        print(f"first {what}: {body}")
    errors = sum(sum(e.values()) for e in results.errors.values())
    if problems:
        print("FAILED: " + "; ".join(problems))
    elif errors:
        print(f"no request lost or doubled, but {errors} errors (aim: 0)")
    else:
        print("OK: 0 errors; every 201 is one issue, every Idempotency-Key one issue")
    return not problems and not errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=30, help="per request, seconds")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/bench_web_load"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    if not 1 <= args.clients <= 500 or not 0 < args.seconds <= 600:
        raise batch.BenchError("--clients must be 1..500 and --seconds at most 600")

    import redis

    if not batch.postgres_prepare(args.database_url):
        raise batch.BenchError(f"{args.database_url} exists; name a database this run can drop")
    redis_client = redis.Redis.from_url(args.redis_url)
    redis_client.flushdb()
    proc = None
    ok = False
    try:
        with tempfile.TemporaryDirectory(prefix="web-load-") as var_dir:
            web_port = free_port()
            print("starting the production-like stack ...", flush=True)
            proc, _out, env = stack_start(args, Path(var_dir), web_port)
            keys = api_keys_create(env, args.clients)
            tag = f"load{uuid.uuid4().hex[:8]}"
            base = f"http://127.0.0.1:{web_port}"
            print(f"driving {base} with {args.clients} clients for {args.seconds:g} s ...")
            results, elapsed = asyncio.run(drive(base, keys, tag, args))
            ok = report(args, results, elapsed, issues_in_database(args.database_url, tag))
            stack_stop(proc)
    finally:
        stack_stop(proc)
        batch.postgres_drop(args.database_url)
        redis_client.flushdb()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
