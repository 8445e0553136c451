"""Charges per second through Redis and real Celery workers, against the bare SDK.

N approved charging issues are charged by 2 real `celery worker` processes taking
billing.charge_issue_charge messages from Redis (the task production runs: payments.attempts'
begin, one off-session PaymentIntent create with confirm, record with the issue's state, audit
and outbound event; then the outcome email task it sends). For an equivalent set of N provider
customers and cards, 2 plain Python processes call the bare SDK
(StripeClient.v1.payment_intents.create with confirm=True, off_session=True, the same argument
shape, no Django) as fast as they can. Same concurrency on both sides: 2 processes charging.
It prints charges per second of each, the ratio ours/bare (the aim: at least 0.8), and the
broker traffic per charge.

Run from the project root:

    .venv/bin/python bench/charge_throughput.py [--n 2000] [--block 500] [--database-url URL]
                                                [--broker-url URL]

How it runs:
- localstripe, the database and the provider setup are bench/charge_batch.py's (its helpers
  are imported, not copied): localstripe on a free loopback port with its state in memory;
  PostgreSQL postgres://postgres@127.0.0.1:5432/bench_throughput, created when missing and
  dropped at the end (an existing database is used and left in place). Workers need a real
  database server, so there is no SQLite fallback here.
- The broker is a private redis-server on a free loopback port (no persistence), started here
  and stopped at the end, so Redis's INFO commandstats count only this bench's traffic. With
  --broker-url an existing Redis database is used instead (it must be empty; it is flushed at
  the end) and the command counts then include whatever else that server did meanwhile.
- Workers: 2 worker nodes (`celery -A config worker --concurrency 1`, prefork, settings
  config.settings.local with DEBUG off, log level WARNING), as two machines would run them,
  against the same database, localstripe and broker. They are started and pinged before
  anything is timed.
- Ours, per block: publish the block's charge messages (timed: dispatch is our cost), then
  wait until every issue of the block is settled in the database ("settled", the charges/s
  figure), then until the queue is empty and every message acknowledged ("drained": also the
  outcome email task each charge sends, which the bare side has no counterpart for). Bare, per
  block: both processes start together and take the next charge from a shared counter until
  the block is done. Blocks alternate which side goes first, so localstripe's store, which
  grows with every object (it scans it on each PaymentIntent), weighs on both alike. A few
  --warmup charges of each side run first and are not counted.
- Broker traffic: INFO commandstats before and after each of our blocks (this bench's own
  LLEN/HLEN/INFO checks subtracted). A command is at most one round trip; kombu sends some in
  MULTI/EXEC pipelines (one round trip for several), so commands per charge is an upper bound
  on round trips. LPUSH counts published messages.
- Afterwards every measured issue must be `succeeded` with one succeeded attempt, and
  localstripe must hold exactly one succeeded PaymentIntent for each (charge_batch's check).

The figures depend on the machine (and on what else runs on it); the ratio is the number to
compare, read with the per-block and CPU lines: localstripe's cost per PaymentIntent grows with
its store (about 3 ms of its CPU at the start, 70-80 ms after 2,000 + 2,000 customers and
charges), so at large --n it dominates both sides and pulls the ratio towards 1, while the
first blocks show our own overhead (the workers' CPU per charge against the SDK processes').
Nothing asserts a timing.
"""

import argparse
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import charge_batch as batch  # noqa: E402 - run as a script from the project root

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_throughput"
RATIO_AIM = 0.8
PROCESSES = 2
FINAL_STATES = ("succeeded", "failed")
# The bench's own calls on the broker, taken out of the counts.
OWN_COMMANDS = ("info", "llen", "hlen", "ping", "flushdb", "config|get", "config")


# --- Redis --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_start(var_dir: Path, seconds: float) -> tuple[subprocess.Popen, str]:
    """A private redis-server on a free loopback port, nothing written to disk."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise batch.BenchError("redis-server not found: install it or pass --broker-url")
    port = _free_port()
    log = var_dir / "redis.log"
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        + ["--dir", str(var_dir), "--logfile", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise batch.BenchError(f"redis-server exited ({proc.returncode}):\n{_tail(log)}")
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            return proc, url
        except redis.RedisError:
            time.sleep(0.05)
    batch.process_stop(proc)
    raise batch.BenchError(f"redis-server did not start within {seconds:.0f}s")


def _tail(path: Path, lines: int = 30) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


def commandstats(client) -> dict[str, int]:
    return {
        name.removeprefix("cmdstat_"): int(stats["calls"])
        for name, stats in client.info("commandstats").items()
    }


def commands_between(before: dict, after: dict, own: dict) -> dict[str, int]:
    delta = {}
    for name, calls in after.items():
        n = calls - before.get(name, 0) - own.get(name, 0)
        if n and name not in ("info", "ping"):
            delta[name] = n
    return delta


def cpu_seconds(pids) -> float:
    """User + system CPU of these processes and their children (Linux /proc; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime (fields 14-17; after the ")" they start at index 11)
        total += sum(int(x) for x in fields[11:15])
    return total / tick


def group_pids(pgids) -> list[int]:
    """Every process in these process groups (a worker node: its main process and its pool)."""
    pids = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids:
                pids.append(int(entry))
    return pids


# --- Workers ------------------------------------------------------------------------------------


class Workers:
    """`celery worker` nodes, each in its own process group."""

    def __init__(self, var_dir: Path, broker_url: str, database_url: str, api_base: str):
        self.var_dir, self.procs, self.names = var_dir, [], []
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "VAR_DIR": str(var_dir),
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "EMAIL_URL": "memorymail://",
            "CACHE_URL": "locmemcache://",
            "STRIPE_API_BASE": api_base,
            "STRIPE_SECRET_KEY": "sk_test_localstripe",
            "STRIPE_PUBLISHABLE_KEY": "pk_test_localstripe",
        }

    def start(self, count: int, prefetch_multiplier: int | None) -> None:
        extra = []
        if prefetch_multiplier is not None:
            extra = ["--prefetch-multiplier", str(prefetch_multiplier)]
        host = socket.gethostname()
        for i in range(count):
            name = f"bench{i + 1}@{host}"
            log = self.var_dir / f"worker{i + 1}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    [batch.PY, "-m", "celery", "-A", "config", "worker"]
                    + ["--pool", "prefork", "--concurrency", "1", "--hostname", name]
                    + ["--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
                    + ["--without-heartbeat", *extra],
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs.append(proc)
            self.names.append(name)

    def wait_ready(self, broker: "Broker", seconds: float) -> None:
        """Every node is waiting on the queue: as many clients of our database blocked in
        BRPOP as nodes. (Celery's remote-control ping would do, but it takes the broker from
        CELERY_BROKER_URL in this process's environment, which django_start sets to memory.)"""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_alive()
            blocked = [
                c
                for c in broker.redis.client_list()
                if c.get("cmd") == "brpop" and c.get("db") == str(broker.db)
            ]
            if len(blocked) >= len(self.procs):
                return
            time.sleep(0.2)
        logs = "\n".join(_tail(self.var_dir / f"worker{i + 1}.log") for i in range(len(self.procs)))
        raise batch.BenchError(f"workers not consuming within {seconds:.0f}s:\n{logs}")

    def check_alive(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                log = self.var_dir / f"worker{i + 1}.log"
                raise batch.BenchError(f"worker {i + 1} exited ({proc.returncode}):\n{_tail(log)}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # warm shutdown: finishes its task
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# --- Ours -------------------------------------------------------------------------------------


class Broker:
    def __init__(self, url: str):
        import redis
        from celery import Celery

        self.url = url
        self.redis = redis.Redis.from_url(url)
        self.db = self.redis.connection_pool.connection_kwargs.get("db", 0)
        # Not the project's app and not the current one: an explicit connection to this broker
        # (Celery would otherwise take CELERY_BROKER_URL from this process's environment).
        self.app = Celery("bench-throughput", set_as_current=False)
        self.connection = self.app.connection_for_write(url)
        self.own: dict[str, int] = {}

    def publish(self, issue_ids: list[int]) -> None:
        for issue_id in issue_ids:
            self.app.send_task(
                "billing.charge_issue_charge",
                args=[issue_id],
                task_id=str(uuid.uuid4()),
                connection=self.connection,
            )

    def drained(self) -> bool:
        self.own["llen"] = self.own.get("llen", 0) + 1
        self.own["hlen"] = self.own.get("hlen", 0) + 1
        waiting, unacked = self.redis.llen("celery"), self.redis.hlen("unacked")
        return waiting == 0 and unacked == 0

    def close(self) -> None:
        self.connection.release()
        self.app.close()
        self.redis.close()


def settled_count(issue_ids: list[int]) -> int:
    from billing.models import ChargeIssue

    return ChargeIssue.objects.filter(pk__in=issue_ids, state__in=FINAL_STATES).count()


def ours_block(broker: Broker, issue_ids: list[int], deadline: batch.Deadline, meter) -> dict:
    """Publish, wait until settled, then until drained: seconds settled and drained, Redis
    commands, CPU seconds of the workers and of localstripe."""
    broker.own = {}
    before = commandstats(broker.redis)
    cpu_before = meter()
    clock = time.perf_counter
    start = clock()
    broker.publish(issue_ids)
    while settled_count(issue_ids) < len(issue_ids):
        time.sleep(0.02)
        deadline.check("waiting for our charges to settle")
    settled = clock() - start
    while not broker.drained():
        time.sleep(0.02)
        deadline.check("waiting for the queue to drain")
    drained = clock() - start
    cpu_after = meter()
    commands = commands_between(before, commandstats(broker.redis), broker.own)
    return {
        "settled": settled,
        "drained": drained,
        "commands": commands,
        "cpu": {k: cpu_after[k] - cpu_before[k] for k in cpu_after},
    }


# --- Bare -------------------------------------------------------------------------------------


def _bare_process(api_base, cards, first_amount, counter, go, results) -> None:
    """One bare-SDK process: a StripeClient as payments.gateway builds it, then the next card
    from the shared counter until none is left."""
    import stripe

    client = stripe.StripeClient(
        "sk_test_localstripe",
        base_addresses={"api": api_base},
        http_client=stripe.RequestsClient(timeout=20.0),
        max_network_retries=0,
    )
    go.wait()
    cpu_start = time.process_time()
    done, failed = 0, []
    while True:
        with counter.get_lock():
            i = counter.value
            counter.value += 1
        if i >= len(cards):
            break
        customer_id, method_id = cards[i]
        intent = client.v1.payment_intents.create(
            params={
                "amount": 1000 + first_amount + i,
                "currency": "eur",
                "customer": customer_id,
                "payment_method": method_id,
                "confirm": True,
                "off_session": True,
                "metadata": {"charge_issue": f"bare-{first_amount + i}", "space": "bare"},
            },
            options={"idempotency_key": f"bench-bare-{first_amount + i}"},
        )
        if intent.status != "succeeded":
            failed.append(intent.id)
        done += 1
    results.put((done, failed, time.process_time() - cpu_start))


def bare_block(api_base: str, cards: list, first_amount: int, processes: int, meter) -> dict:
    """Both processes charge until the block is done: seconds, CPU seconds of the processes
    (from the start signal on) and of localstripe."""
    ctx = multiprocessing.get_context("spawn")  # nothing shared with this process's sockets
    counter, go, results = ctx.Value("i", 0), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_bare_process, args=(api_base, cards, first_amount, counter, go, results)
        )
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # let them import the SDK and build their clients; not timed
    cpu_before = meter()
    start = time.perf_counter()
    go.set()
    outcomes = []
    while len(outcomes) < len(procs):
        try:
            outcomes.append(results.get(timeout=1.0))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for proc in procs:
                    proc.kill()
                raise batch.BenchError(
                    f"a bare process failed (exit {dead[0]}); see above"
                ) from None
    seconds = time.perf_counter() - start
    localstripe_cpu = meter()["localstripe"] - cpu_before["localstripe"]
    for proc in procs:
        proc.join(timeout=10)
    done = sum(n for n, _, _ in outcomes)
    failed = [pi for _, f, _ in outcomes for pi in f]
    if done != len(cards) or failed:
        raise batch.BenchError(f"bare: {done} of {len(cards)} charged, failed: {failed[:5]}")
    return {
        "seconds": seconds,
        "cpu": {"charging": sum(c for _, _, c in outcomes), "localstripe": localstripe_cpu},
    }


# --- Run --------------------------------------------------------------------------------------


def measure(args, api_base: str, localstripe_pid: int, broker: Broker, workers, deadline):
    def meter() -> dict:
        return {
            "charging": cpu_seconds(group_pids({p.pid for p in workers.procs})),
            "localstripe": cpu_seconds([localstripe_pid]),
        }

    n, warmup = args.n, args.warmup
    setup_started = time.monotonic()
    ours_cards = batch.provider_cards(n + warmup, "ours", deadline)
    bare_cards = batch.provider_cards(n + warmup, "bare", deadline)
    issue_ids = batch.issues_create(ours_cards)
    from django.db import connection

    connection.close()  # the workers hold theirs; ours reopens for the polls
    deadline.check("setting up")
    workers.wait_ready(broker, seconds=60)
    setup = time.monotonic() - setup_started

    if warmup:
        ours_block(broker, issue_ids[:warmup], deadline, meter)
        bare_block(api_base, bare_cards[:warmup], 0, args.processes, meter)
    ids, cards = issue_ids[warmup:], bare_cards[warmup:]
    blocks = []
    for b, first in enumerate(range(0, n, args.block)):
        block_ids = ids[first : first + args.block]
        block_cards = cards[first : first + args.block]
        if b % 2 == 0:
            ours = ours_block(broker, block_ids, deadline, meter)
            bare = bare_block(api_base, block_cards, warmup + first, args.processes, meter)
        else:
            bare = bare_block(api_base, block_cards, warmup + first, args.processes, meter)
            ours = ours_block(broker, block_ids, deadline, meter)
        workers.check_alive()
        blocks.append({"n": len(block_ids), "ours": ours, "bare": bare})
        deadline.check(f"measuring (block {b + 1})")
    batch.verify(issue_ids)
    return {"blocks": blocks, "setup": setup}


def report(args, results: dict, where: str, broker_note: str, seconds: float) -> None:
    blocks = results["blocks"]
    n = sum(b["n"] for b in blocks)
    settled = sum(b["ours"]["settled"] for b in blocks)
    drained = sum(b["ours"]["drained"] for b in blocks)
    bare = sum(b["bare"]["seconds"] for b in blocks)
    commands: dict[str, int] = {}
    for b in blocks:
        for name, calls in b["ours"]["commands"].items():
            commands[name] = commands.get(name, 0) + calls
    ours_rate, drained_rate, bare_rate = n / settled, n / drained, n / bare
    print(
        f"charges: {n} ours + {n} bare, {args.processes} processes each "
        f"(blocks of {args.block}, {args.warmup} warm-up each)"
    )
    print(f"database: {where}")
    print(f"broker: {broker_note}")
    print(f"    ours: {ours_rate:7.1f} charges/s (published to settled, {settled:.1f} s)")
    print(
        f"          {drained_rate:7.1f} charges/s with the outcome emails drained ({drained:.1f} s)"
    )
    print(f"bare SDK: {bare_rate:7.1f} charges/s ({bare:.1f} s)")
    print(
        f"ratio ours/bare: {ours_rate / bare_rate:.2f} (aim >= {RATIO_AIM}); "
        f"with emails drained {drained_rate / bare_rate:.2f}"
    )
    per_block = [b["bare"]["seconds"] / b["ours"]["settled"] for b in blocks]
    print(
        "per block, ours/bare charges/s: "
        + ", ".join(
            f"{b['n'] / b['ours']['settled']:.0f}/{b['n'] / b['bare']['seconds']:.0f}"
            for b in blocks
        )
        + f" (ratio median {statistics.median(per_block):.2f})"
    )
    total = sum(commands.values())
    published = commands.get("lpush", 0)
    print(
        f"broker per charge: {total / n:.1f} Redis commands (an upper bound on round trips; "
        f"{commands.get('exec', 0) / n:.1f} MULTI/EXEC pipelines among them), "
        f"{published / n:.2f} messages published (LPUSH)"
    )
    top = sorted(commands.items(), key=lambda kv: -kv[1])
    print("  by command, per charge: " + ", ".join(f"{k} {v / n:.2f}" for k, v in top))
    cpu = {
        side: {
            k: 1000 * sum(b[side]["cpu"][k] for b in blocks) / n
            for k in ("charging", "localstripe")
        }
        for side in ("ours", "bare")
    }
    print(
        "CPU per charge: ours {o[charging]:.1f} ms in the workers (emails included) + "
        "{o[localstripe]:.1f} ms in localstripe; bare {b[charging]:.1f} ms in the SDK processes + "
        "{b[localstripe]:.1f} ms in localstripe ({cores} cores here; PostgreSQL's and Redis's "
        "CPU not counted)".format(o=cpu["ours"], b=cpu["bare"], cores=os.cpu_count())
    )
    print(f"setup (not timed): {results['setup']:.0f} s; whole run: {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="charges of each kind")
    parser.add_argument("--block", type=int, default=500, help="charges per alternating block")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted charges of each kind")
    parser.add_argument(
        "--processes", type=int, default=PROCESSES, help="worker nodes, and bare processes"
    )
    parser.add_argument(
        "--prefetch-multiplier",
        type=int,
        help="override the workers' prefetch (default: the settings', 1) to compare",
    )
    parser.add_argument("--database-url", help=f"PostgreSQL; default {DEFAULT_DATABASE_URL}")
    parser.add_argument(
        "--broker-url", help="an empty Redis database (default: a private redis-server)"
    )
    parser.add_argument(
        "--time-limit", type=float, default=1800.0, help="give up after this many seconds"
    )
    args = parser.parse_args()
    if args.n < 1 or args.block < 1 or args.warmup < 0 or args.processes < 1:
        parser.error("--n, --block and --processes must be positive, --warmup not negative")
    started = time.monotonic()
    deadline = batch.Deadline(args.time_limit)
    # A plain kill (or `timeout`) still stops what this started: the finally below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    var_dir = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    localstripe = redis_server = workers = broker = None
    database_url, drop_database = args.database_url or DEFAULT_DATABASE_URL, False
    try:
        localstripe, api_base = batch.localstripe_start(var_dir, seconds=30)
        if args.broker_url:
            broker_url = args.broker_url
            broker_note = f"{broker_url} (commands count the whole server's traffic)"
        else:
            redis_server, broker_url = redis_start(var_dir, seconds=15)
            broker_note = f"private redis-server {broker_url}"
        broker = Broker(broker_url)
        if broker.redis.dbsize():
            raise batch.BenchError(f"the broker database {broker_url} is not empty")
        try:
            drop_database = batch.postgres_prepare(database_url)
        except batch.BenchError:
            raise
        except Exception as exc:  # psycopg.OperationalError and friends
            raise batch.BenchError(f"PostgreSQL at {database_url} is not usable: {exc}") from exc
        where = database_url.rsplit("@", 1)[-1]
        batch.django_start(database_url, var_dir, api_base)
        workers = Workers(var_dir, broker_url, database_url, api_base)
        workers.start(args.processes, args.prefetch_multiplier)
        results = measure(args, api_base, localstripe.pid, broker, workers, deadline)
    finally:
        if workers is not None:
            workers.stop()
        if broker is not None:
            if args.broker_url:
                broker.redis.flushdb()
            broker.close()
        batch.django_stop()
        batch.process_stop(redis_server)
        batch.process_stop(localstripe)
        if drop_database:
            batch.postgres_drop(database_url)
        shutil.rmtree(var_dir, ignore_errors=True)
    report(args, results, where, broker_note, time.monotonic() - started)


if __name__ == "__main__":
    main()
