"""Collections under faults: every task delivered twice, a worker killed, the provider, the
broker and the database each cut for seconds; does every collection settle, and in time?

Issue 17's "Done when": such a run ends with every collection settled within seven minutes,
and no level waits out its lease (chargeflows.services.LEASE, 5 minutes). The script prints
how many collections settled and when, the longest any level stayed due without being worked
on, which levels waited out their lease and near which fault, and the money invariants:
- at localstripe, at most one succeeded PaymentIntent per issue, per level and per link;
- our succeeded ChargeAttempts are localstripe's succeeded PaymentIntents (same ids, count
  and sum), and a collection that succeeded has exactly one, one that failed none.
Exit status: 0 all settled within the bound, no level waited out its lease and every invariant
holds; 1 an invariant broke; 2 the bound was missed or a level waited out its lease
(invariants held); 3 the run itself could not be done.

Run from the project root (DATABASE_URL and CELERY_BROKER_URL name the servers):

    .venv/bin/python bench/chaos.py [--n 200] [--bound 420] [--smoke] [--json PATH]

How it runs:
- PostgreSQL: a database of its own, chaos_<pid>, on DATABASE_URL's server, migrated, and
  dropped at the end. Redis: a database of its own on CELERY_BROKER_URL's server (db 6, or 7
  if the suite's broker is 6; --broker-url to choose), held with a lock so two runs never
  share it, emptied before and after. localstripe: its own, on a free port, state in memory.
- Cuttable TCP proxies (bench/tcp_proxy.py) stand in front of all three; the workers and the
  beat reach every service only through them. The bench itself talks to them directly, so
  its sampling and its checks are never cut.
- Processes: --workers `celery worker` nodes (default 2, one prefork process each, acks late
  as configured, visibility timeout --visibility-timeout s) and one beat (the database
  scheduler), with bench/chaos_settings.py, which publishes every task message twice with the
  same task id. A worker or the beat that exits by itself is started again (as a process
  supervisor would) and counted.
- Load: --n charging issues, approved and due, for customers whose card is localstripe's
  4000 0000 0000 0341 (saves, declines every charge). A third also have a 4242 card (the
  level-2 "another saved method" step collects the amount), a third a second declining card,
  a third nothing else (those end failed after the last level). The flow (the space's only
  active one): level 1 retries the card and emails the customer; level 2 retries the card,
  charges another saved method, then sends the payment link; each lasts --period s (full: 90
  s, longer than the production beat's minute of lag: a level starts where the one before
  ended, so a shorter one would start already over and be skipped).
  At the start the bench publishes every issue's charge task (twice, like any task).
- Faults, one after another: SIGKILL of worker 1 (its process group; a replacement starts at
  once), then the provider, the broker and the database each cut for --cut s (open connections
  reset, new ones refused). The first comes --fault-start s after the start, each next one at
  least --fault-gap s after the one before, and each waits for a moment when the collections
  are busy (a charge begun, a level or case changed in the last 3 s; at most --fault-patience
  s), so that it meets work in flight: in the full run the waves of work come with the beat's
  minutes.
- Every second it samples the levels that are due (pending, due_at passed): a level's wait
  beyond its due time is how long it stayed due. A healthy level is taken within a beat
  interval; one whose run was lost stays due until its lease ends. Why it stayed due is read
  from its runs, which bench/chaos_settings.py logs with their arguments and outcome: both
  copies returned without charging (they met on the row), a run raised and was dropped, its
  run died with the killed worker, or its message never came; and near which fault.
- It stops when every collection (case and issue) is settled or at --bound s, stops the
  processes, then reads localstripe's PaymentIntents and our attempts.

--smoke is the same run, small and fast, for `make test` (tests/chargeflows/test_fault_run.py):
6 collections, levels of 8 s, the minute-scale beats every 2 s (CHAOS_BEAT_SECONDS), faults of
2 s from 2 s on, bound 200 s. The bound leaves room for one reconciliation (an attempt whose
provider call a cut broke is looked up only after payments.attempts.RECONCILE_AFTER, 2
minutes, a fixed product delay) but not for a level waiting out its 5-minute lease. The smoke
test asserts the exit status: a liveness bound, not a speed figure.

Control runs: --no-faults (duplicates only), --once (faults only, every task published once).
--keep-logs and --keep-db keep the processes' logs and the database for a closer look.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import charge_batch as batch  # noqa: E402 - run as a script from the project root
from bench.tcp_proxy import Proxies  # noqa: E402

SETTINGS = "bench.chaos_settings"
DECLINES = "4000000000000341"  # localstripe: attaches, then declines every charge
PAYS = "4242424242424242"
LOCK_KEY = "backoffice-chaos-bench"
SECRET_KEY = "sk_test_localstripe"
EXIT_OK, EXIT_INVARIANT, EXIT_BOUND, EXIT_ERROR = 0, 1, 2, 3
# A level still due this long after its due time waited for something other than the beat.
LONG_WAIT_SECONDS = 120
CUT_ORDER = ("provider", "broker", "database")

FULL = {
    "n": 200,
    "period": 90.0,
    "bound": 420.0,
    "beat_seconds": None,
    "fault_start": 20.0,
    "fault_gap": 10.0,
    # Longer than the beat's minute: the next wave of work comes with its next tick.
    "fault_patience": 150.0,
    "cut": 5.0,
}
SMOKE = {
    "n": 6,
    "period": 8.0,
    # Room for one reconciliation (RECONCILE_AFTER, 2 minutes, after a cut broke a call) and
    # the seconds around it; far below a 5-minute lease.
    "bound": 200.0,
    "beat_seconds": 2.0,
    "fault_start": 2.0,
    "fault_gap": 3.0,
    "fault_patience": 10.0,
    "cut": 2.0,
}

RECEIVED = re.compile(r"Task (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] received")
RAISED = re.compile(
    r"Task (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] raised unexpected: (?P<error>\w+)\((?P<msg>.*)"
)
RETRIED = re.compile(
    r"Task (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] retry: Retry in \S+: "
    r"(?P<error>\w+)\((?P<msg>.*)"
)
# core.tasks.dispatch: a committed change whose message the broker refused (the beat resends).
DISPATCH_FAILED = re.compile(r"dispatch of (?P<name>[\w.]+)\(.* failed, the broker is unavailable")
COPY_DROPPED = re.compile(r"chaos: copy of (?P<name>[\w.]+)\[")
# Logged by bench/chaos_settings.py around every task run.
RUN_START = re.compile(
    r"chaos: start (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] at=(?P<at>\S+) args=(?P<args>.*)$"
)
RUN_END = re.compile(
    r"chaos: end (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] at=(?P<at>\S+) "
    r"state=(?P<state>\w+) result=(?P<result>.*)$"
)
LEVEL_RUN = "chargeflows.flow_level_run"


class ChaosError(SystemExit):
    def __init__(self, message: str):
        super().__init__(EXIT_ERROR)
        self.message = message


def log(message: str) -> None:
    print(message, flush=True)


# --- Services ---------------------------------------------------------------------------------


def _with(url: str, *, host: str | None = None, port: int | None = None, path: str | None = None):
    parts = urlsplit(url)
    netloc = parts.netloc
    if host is not None or port is not None:
        credentials = netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else ""
        netloc = f"{credentials}{host or parts.hostname}:{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=path if path is not None else parts.path))


def database_create(server_url: str) -> str:
    """A new database chaos_<pid> on the server of server_url; its URL."""
    import psycopg
    from psycopg import sql

    name = f"chaos_{os.getpid()}"
    admin = _with(server_url, path="/postgres")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise ChaosError(f"PostgreSQL at {admin} is not usable: {exc}") from exc
    return _with(server_url, path=f"/{quote(name)}")


def _same_redis_db(a: str, b: str) -> bool:
    a, b = urlsplit(a.replace("rediscache://", "redis://", 1)), urlsplit(b)
    return (a.hostname, a.port or 6379, a.path.strip("/") or "0") == (
        b.hostname,
        b.port or 6379,
        b.path.strip("/") or "0",
    )


def broker_choose(explicit: str | None) -> str:
    """A Redis database of the run's own, never the suite's broker, cache or real-broker db."""
    suite = os.environ.get("CELERY_BROKER_URL", "").strip()
    others = [
        os.environ.get(name, "").strip()
        for name in ("CELERY_BROKER_URL", "CACHE_URL", "TEST_REAL_BROKER_URL")
    ]
    if explicit:
        url = explicit
    else:
        if urlsplit(suite).scheme not in {"redis", "rediss"}:
            raise ChaosError(
                f"CELERY_BROKER_URL ({suite or 'unset'}) is not Redis: set it, or pass "
                "--broker-url with a Redis database this run may empty"
            )
        taken = {urlsplit(o.replace("rediscache://", "redis://")).path.strip("/") for o in others}
        db = next(d for d in ("6", "7", "8", "9") if d not in taken)
        url = _with(suite, path=f"/{db}")
    for other in others:
        if other and _same_redis_db(other, url):
            raise ChaosError(f"the broker {url} is also the suite's {other}")
    return url


class BrokerDb:
    """The run's Redis database: locked for this run, emptied before and after."""

    def __init__(self, url: str, wait: float):
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise ChaosError(f"Redis at {url} is not reachable ({exc})") from exc
        self.lock = self.client.lock(LOCK_KEY, timeout=3600, blocking_timeout=wait)
        if not self.lock.acquire():
            raise ChaosError(f"Redis database {url} stayed busy with another chaos run")
        self.empty()

    def empty(self) -> None:
        for key in self.client.scan_iter(count=1000):
            if key.decode() != LOCK_KEY:
                self.client.delete(key)

    def close(self) -> None:
        self.empty()
        try:
            self.lock.release()
        except Exception:  # expired: nothing to release
            pass
        self.client.close()


# --- Processes --------------------------------------------------------------------------------


class Node:
    """A `celery worker` or `celery beat` process in its own process group."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        with log_path.open("w") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, seconds: float = 20) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        else:
            self.signal(signal.SIGKILL)  # a pool child left behind


class Cluster:
    """The run's workers and beat, supervised: one that exits by itself is started again."""

    def __init__(self, var_dir: Path, env: dict, workers: int):
        self.var_dir, self.env = var_dir, env
        self.nodes: list[Node] = []
        self.workers: list[Node] = []
        self.beat: Node | None = None
        self.killed: set[Node] = set()
        self.restarts: list[tuple[float, str, int]] = []
        self._count = 0
        for _ in range(workers):
            self.workers.append(self._worker())

    def _worker(self) -> Node:
        self._count += 1
        name = f"chaos{self._count}"
        argv = [batch.PY, "-m", "celery", "-A", "config", "worker"]
        argv += ["--pool", "prefork", "--concurrency", "1", "--hostname", f"{name}@%h"]
        argv += ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
        argv += ["--without-heartbeat"]
        node = Node(name, argv, self.env, self.var_dir / f"{name}.log")
        self.nodes.append(node)
        return node

    def beat_start(self) -> None:
        argv = [batch.PY, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"]
        n = sum(1 for node in self.nodes if node.name.startswith("beat"))
        self.beat = Node(f"beat{n + 1}", argv, self.env, self.var_dir / f"beat{n + 1}.log")
        self.nodes.append(self.beat)

    def wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for node in self.workers:
            while " ready." not in node.output():
                if not node.alive():
                    raise ChaosError(f"worker {node.name} exited:\n{_tail(node.output())}")
                if time.monotonic() > deadline:
                    raise ChaosError(f"worker {node.name} not ready in {seconds:.0f}s")
                time.sleep(0.2)

    def kill_worker(self, index: int = 0) -> tuple[str, str]:
        """SIGKILL a worker (main process and pool child: no goodbye, no ack) and start its
        replacement at once. Returns (killed, replacement)."""
        node = self.workers[index]
        node.signal(signal.SIGKILL)
        node.proc.wait(timeout=10)
        self.killed.add(node)
        self.workers[index] = self._worker()
        return node.name, self.workers[index].name

    def supervise(self, elapsed: float) -> None:
        for i, node in enumerate(self.workers):
            if not node.alive() and node not in self.killed:
                self.restarts.append((elapsed, node.name, node.proc.returncode))
                self.workers[i] = self._worker()
        if self.beat is not None and not self.beat.alive():
            self.restarts.append((elapsed, self.beat.name, self.beat.proc.returncode))
            self.beat_start()

    def stop(self) -> None:
        if self.beat is not None:
            self.beat.stop()
        for node in self.workers:
            node.stop()
        for node in self.nodes:
            if node.alive():
                node.stop(seconds=1)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --- Django, the provider and the load --------------------------------------------------------


def django_start(
    database_url: str, broker_url: str, api_base: str, var_dir: Path, *, once: bool
) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "VAR_DIR": str(var_dir),
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "EMAIL_URL": "memorymail://",
            "CACHE_URL": "locmemcache://",
            "STRIPE_API_BASE": api_base,
            "STRIPE_SECRET_KEY": SECRET_KEY,
            "STRIPE_PUBLISHABLE_KEY": "pk_test_localstripe",
        }
    )
    os.environ.pop("CHAOS_BEAT_SECONDS", None)
    # The bench's own publishes (the issues' charges) are doubled like the workers' ones.
    os.environ.pop("CHAOS_DELIVER_ONCE", None)
    if once:
        os.environ["CHAOS_DELIVER_ONCE"] = "1"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


def provider_customers(n: int, deadline: batch.Deadline) -> list[dict]:
    """n provider customers with a declining card; customer i % 3 == 0 also has a card that
    pays, i % 3 == 1 a second declining card, i % 3 == 2 nothing else."""
    from payments import gateway

    sdk = gateway.client().v1
    made = []
    for i in range(n):
        customer = sdk.customers.create(
            params={"name": f"Chaos customer {i}", "email": f"chaos-{i}@bench.invalid"}
        )
        numbers = [DECLINES] + ([PAYS] if i % 3 == 0 else [DECLINES] if i % 3 == 1 else [])
        cards = []
        for number in numbers:
            method = sdk.payment_methods.create(
                params={
                    "type": "card",
                    "card": {"number": number, "exp_month": 6, "exp_year": 2034, "cvc": "123"},
                }
            )
            sdk.payment_methods.attach(method.id, params={"customer": customer.id})
            cards.append((method.id, number[-4:]))
        made.append({"customer": customer.id, "cards": cards})
        if i % 50 == 49:
            deadline.check("creating provider customers")
    return made


def load_create(customers: list[dict], period: timedelta) -> tuple[int, list[int]]:
    """The space, its flow and one approved, due issue per customer: (space id, issue ids)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from billing.models import ChargeIssue
    from cards.models import Customer, PaymentCard
    from chargeflows.models import ChargeFlow, ChargeFlowLevelConfiguration
    from spaces.models import Space

    stamp = uuid.uuid4().hex[:10]
    space = Space.objects.create(
        name="Chaos", slug=f"chaos-{stamp}", default_currency="EUR", max_charge_minor=10**12
    )
    # The default flow (days long) steps aside for one whose levels last seconds.
    ChargeFlow.objects.filter(space=space).update(state=ChargeFlow.State.INACTIVE)
    flow = ChargeFlow.objects.create(
        space=space, name="Chaos flow", priority=1, state=ChargeFlow.State.ACTIVE
    )
    ChargeFlowLevelConfiguration.objects.create(
        flow=flow,
        name="Retry the card and tell the customer",
        priority=1,
        period=period,
        run_token_charge=True,
        run_saved_method=False,
        run_payment_link=False,
        notify_customer=True,
    )
    ChargeFlowLevelConfiguration.objects.create(
        flow=flow,
        name="Card, another saved method, then the payment link",
        priority=2,
        period=period,
        run_token_charge=True,
        run_saved_method=True,
        run_payment_link=True,
    )
    users = get_user_model().objects
    clerk = users.create_user(f"chaos-clerk-{stamp}", password=None)
    approver = users.create_user(f"chaos-approver-{stamp}", password=None)
    rows = Customer.objects.bulk_create(
        Customer(
            space=space,
            name=f"Chaos customer {i}",
            email=f"chaos-{i}@bench.invalid",
            provider_customer_id=c["customer"],
        )
        for i, c in enumerate(customers)
    )
    first_cards = []
    for row, c in zip(rows, customers, strict=True):
        cards = PaymentCard.objects.bulk_create(
            PaymentCard(
                space=space,
                customer=row,
                provider_payment_method_id=method_id,
                brand="Visa",
                last4=last4,
                exp_month=6,
                exp_year=2034,
                is_default=k == 0,
            )
            for k, (method_id, last4) in enumerate(c["cards"])
        )
        first_cards.append(cards[0])
    now = timezone.now()
    issues = ChargeIssue.objects.bulk_create(
        ChargeIssue(
            space=space,
            customer=row,
            card=card,
            source=ChargeIssue.Source.STAFF,
            customer_name=row.name,
            customer_email=row.email,
            provider_customer_id=row.provider_customer_id,
            card_last4=card.last4,
            amount_minor=1000 + i,
            currency="EUR",
            notification_subject="Your charge",
            notification_body="Thank you.",
            charge_date=None,
            state=ChargeIssue.State.APPROVED,
            entered_by=clerk,
            entered_at=now,
            approved_by=approver,
            approved_at=now,
        )
        for i, (row, card) in enumerate(zip(rows, first_cards, strict=True))
    )
    return space.pk, [issue.pk for issue in issues]


def charges_publish(issue_ids: list[int]) -> None:
    """What approval does for a due issue: its charge task (published twice by the settings)."""
    from billing.tasks import charge_issue_charge

    for issue_id in issue_ids:
        charge_issue_charge.delay(issue_id)


# --- Watching ---------------------------------------------------------------------------------


@dataclass
class Wait:
    """One stretch of a level being due (pending, due_at passed) with the same due_at."""

    level_id: int
    case_id: int
    position: int
    step: str
    due_at: datetime
    last_seen: datetime
    lease_until: datetime | None = None

    @property
    def seconds(self) -> float:
        return (self.last_seen - self.due_at).total_seconds()


@dataclass
class Watch:
    space_id: int
    total: int
    waits: dict = field(default_factory=dict)

    def sample(self) -> None:
        from django.utils import timezone

        from chargeflows.models import ChargeFlowLevel

        now = timezone.now()
        due = ChargeFlowLevel.objects.filter(
            case__space_id=self.space_id,
            state=ChargeFlowLevel.State.PENDING,
            due_at__isnull=False,
            due_at__lte=now,
        ).values_list("pk", "case_id", "position", "step", "due_at", "claimed_until")
        for pk, case_id, position, step, due_at, claimed_until in due:
            wait = self.waits.get((pk, due_at))
            if wait is None:
                wait = self.waits[(pk, due_at)] = Wait(pk, case_id, position, step, due_at, now)
            wait.last_seen, wait.step = now, step
            if wait.lease_until is None:
                # The lease it waits under (a later one is the beat's claim once it ran out).
                wait.lease_until = claimed_until

    def busy(self) -> bool:
        """Whether the collections are doing something right now (a charge begun, a level
        started or ended, a case opened or closed in the last 3 seconds): when a fault can
        meet work in flight rather than an idle system."""
        from django.utils import timezone

        from chargeflows.models import ChargeFlowCaseEvent
        from payments.models import ChargeAttempt

        since = timezone.now() - timedelta(seconds=3)
        return (
            ChargeAttempt.objects.filter(space_id=self.space_id, created_at__gte=since).exists()
            or ChargeFlowCaseEvent.objects.filter(
                case__space_id=self.space_id, created_at__gte=since
            ).exists()
        )

    def settled(self) -> int:
        """Collections whose case and issue have both ended."""
        from billing.models import ChargeIssue

        final = ("succeeded", "failed")
        return ChargeIssue.objects.filter(
            space_id=self.space_id, state__in=final, flow_case__state__in=final
        ).count()


def lease_wait(wait: Wait, lease: timedelta) -> bool:
    """Due for LONG_WAIT_SECONDS or more under a lease taken at its due time: nobody works on
    it, and nothing will until the lease runs out (or already did)."""
    return (
        wait.seconds >= LONG_WAIT_SECONDS
        and wait.lease_until is not None
        and wait.lease_until - wait.due_at >= lease - timedelta(seconds=30)
    )


@dataclass
class Run:
    """One delivery of a task, as the worker logged it (the copies share the task id)."""

    node: str
    task_id: str
    args: list
    started: datetime
    ended: datetime | None = None
    state: str = ""
    result: str = ""


def level_runs_read(nodes: list[Node]) -> dict[int, list[Run]]:
    """Every run of chargeflows.flow_level_run, by level id. A worker runs one task at a time
    (one pool process), so a run's end is the next end line of its task id in its log."""
    runs: dict[int, list[Run]] = {}
    for node in nodes:
        if node.name.startswith("beat"):
            continue
        open_runs: dict[str, list[Run]] = {}
        for line in node.output().splitlines():
            if start := RUN_START.search(line):
                try:
                    args = json.loads(start["args"])
                except ValueError:
                    args = []
                run = Run(node.name, start["id"], args, datetime.fromisoformat(start["at"]))
                open_runs.setdefault(start["id"], []).append(run)
                if start["name"] == LEVEL_RUN and args:
                    runs.setdefault(int(args[0]), []).append(run)
            elif end := RUN_END.search(line):
                waiting = open_runs.get(end["id"])
                if waiting:
                    run = waiting.pop(0)
                    run.ended = datetime.fromisoformat(end["at"])
                    run.state, run.result = end["state"], end["result"].strip()
    return runs


def wait_cause(wait: Wait, runs: list[Run], killed: set[str]) -> tuple[str, datetime]:
    """Why a level stayed due, read from its runs: (the cause, when the run that shows it
    started). The run that made it due is the one running at its due time (due_at is set to
    `now` inside a run); later runs are the deliveries of what it dispatched."""
    due = wait.due_at
    early, late = due - timedelta(seconds=10), due + timedelta(minutes=2)
    window = [r for r in runs if early <= r.started <= late]
    setters = [r for r in window if r.started <= due and (r.ended is None or r.ended >= due)]
    # The setter's own copy (same task id) starts after the due time too; it is not a later
    # delivery of what the setter dispatched.
    copies = [r for r in window if r.task_id in {s.task_id for s in setters}]
    after = [r for r in window if r.started > due and r not in copies]
    for r in copies + after:
        if r.ended is None:
            if r.node in killed:
                return "its run died with the killed worker and never came back", r.started
            return "its run never ended", r.started
    for r in after:
        if r.state not in ("SUCCESS", "RETRY"):  # a retried run comes again, same task id
            return (
                f"its run ended {r.state} ({r.result}) and was acknowledged, not retried",
                r.started,
            )
    for r in copies:
        if r.state not in ("SUCCESS", "RETRY"):  # a retried run comes again, same task id
            return (
                f"the run that made it due ended {r.state} ({r.result}) after its commit: "
                "what it dispatched on commit was never sent",
                r.started,
            )
    if copies and not after:
        if len(copies) >= 2 and all(r.result == "False" for r in copies):
            return (
                "both copies of its run returned without charging: they met on the row and "
                "each left the charge to the other",
                copies[0].started,
            )
    if not after:
        return "no run of it came after it became due: its message was lost", due
    results = ", ".join(r.result for r in after)
    return f"its runs after it became due ({results}) did not move it on", after[0].started


# --- Checks -----------------------------------------------------------------------------------


def localstripe_intents(api_base: str) -> list[dict]:
    import requests

    items, params = [], {"limit": 100}
    while True:
        response = requests.get(
            f"{api_base}/v1/payment_intents", params=params, auth=(SECRET_KEY, ""), timeout=30
        )
        response.raise_for_status()
        page = response.json()
        items.extend(page["data"])
        if not page.get("has_more") or not page["data"]:
            return items
        params["starting_after"] = page["data"][-1]["id"]


def money_check(space_id: int, api_base: str) -> dict:
    """The invariants, from localstripe's PaymentIntents and our attempts and cases."""
    from chargeflows.models import ChargeFlowCase, ChargeFlowLevel, ChargeFlowLevelPaymentLink
    from payments.models import ChargeAttempt

    intents = [pi for pi in localstripe_intents(api_base) if pi["status"] == "succeeded"]
    level_issue = dict(
        ChargeFlowLevel.objects.filter(case__space_id=space_id).values_list("pk", "case__issue_id")
    )
    link_issue = dict(
        ChargeFlowLevelPaymentLink.objects.filter(level__case__space_id=space_id).values_list(
            "pk", "level__case__issue_id"
        )
    )
    per_owner: Counter = Counter()
    per_issue: Counter = Counter()
    foreign = []
    for pi in intents:
        meta = pi.get("metadata") or {}
        if meta.get("charge_issue"):
            owner, issue = ("issue", meta["charge_issue"]), int(meta["charge_issue"])
        elif meta.get("charge_flow_level"):
            level = int(meta["charge_flow_level"])
            owner, issue = ("level", level), level_issue.get(level)
        elif meta.get("charge_flow_payment_link"):
            link = int(meta["charge_flow_payment_link"])
            owner, issue = ("link", link), link_issue.get(link)
        else:
            owner, issue = ("unknown", pi["id"]), None
        per_owner[owner] += 1
        if issue is None:
            foreign.append(pi["id"])
        else:
            per_issue[issue] += 1
    attempts = ChargeAttempt.objects.filter(space_id=space_id)
    ours = {
        pi_id: amount
        for pi_id, amount in attempts.filter(status=ChargeAttempt.Status.SUCCEEDED).values_list(
            "provider_payment_intent_id", "amount_minor"
        )
    }
    unsettled = set(
        attempts.exclude(status__in=[ChargeAttempt.Status.SUCCEEDED, ChargeAttempt.Status.FAILED])
        .exclude(provider_payment_intent_id="")
        .values_list("provider_payment_intent_id", flat=True)
    )
    theirs = {pi["id"]: pi["amount"] for pi in intents}
    # A PaymentIntent whose attempt is still unsettled (a run stopped at its bound) is not a
    # ledger difference: the reconciler would record it. It is counted apart.
    recorded = {pi: amount for pi, amount in theirs.items() if pi not in unsettled}
    missing_here = sorted(set(recorded) - set(ours))
    missing_there = sorted(set(ours) - set(theirs))
    mismatched = sorted(pi for pi in set(ours) & set(theirs) if ours[pi] != theirs[pi])
    cases_wrong = []
    for case_id, issue_id, state in ChargeFlowCase.objects.filter(space_id=space_id).values_list(
        "pk", "issue_id", "state"
    ):
        paid = per_issue.get(issue_id, 0)
        if (state == "succeeded" and paid != 1) or (state == "failed" and paid != 0):
            cases_wrong.append({"case": case_id, "state": state, "succeeded_intents": paid})
    doubled_owners = [f"{kind} {pk}" for (kind, pk), n in per_owner.items() if n > 1]
    doubled_issues = [issue for issue, n in per_issue.items() if n > 1]
    result = {
        "succeeded_intents": len(theirs),
        "succeeded_intents_sum": sum(theirs.values()),
        "succeeded_attempts": len(ours),
        "succeeded_attempts_sum": sum(ours.values()),
        "doubled_owners": doubled_owners,
        "doubled_issues": doubled_issues,
        "intents_without_attempt": missing_here,
        "attempts_without_intent": missing_there,
        "amount_mismatches": mismatched,
        "intents_of_unknown_owner": foreign,
        "cases_inconsistent": cases_wrong,
        "unsettled_attempts": attempts.exclude(
            status__in=[ChargeAttempt.Status.SUCCEEDED, ChargeAttempt.Status.FAILED]
        ).count(),
    }
    result["intents_of_unsettled_attempts"] = len(theirs) - len(recorded)
    result["ledger_equal"] = (
        not (missing_here or missing_there or mismatched)
        and len(recorded) == len(ours)
        and sum(recorded.values()) == sum(ours.values())
    )
    result["holds"] = (
        result["ledger_equal"]
        and not doubled_owners
        and not doubled_issues
        and not foreign
        and not cases_wrong
    )
    return result


def logs_read(nodes: list[Node]) -> dict:
    """Deliveries per task id, task failures by kind, dropped copies, beat errors."""
    deliveries: Counter = Counter()
    failures: Counter = Counter()
    retries: Counter = Counter()
    dispatch_failed: Counter = Counter()
    copies_dropped = 0
    beat_errors: Counter = Counter()
    for node in nodes:
        text = node.output()
        if node.name.startswith("beat"):
            for line in text.splitlines():
                if " ERROR " in line:
                    beat_errors[re.sub(r"\d+", "N", line.split(" ERROR ", 1)[1])[:90]] += 1
            continue
        for match in RECEIVED.finditer(text):
            deliveries[match["id"]] += 1
        for match in RAISED.finditer(text):
            failures[f"{match['name']}: {match['error']} ({_cause(match['msg'])})"] += 1
        for match in RETRIED.finditer(text):
            retries[f"{match['name']}: {match['error']} ({_cause(match['msg'])})"] += 1
        for match in DISPATCH_FAILED.finditer(text):
            dispatch_failed[match["name"]] += 1
        copies_dropped += len(COPY_DROPPED.findall(text))
    return {
        "task_ids": len(deliveries),
        "deliveries": sum(deliveries.values()),
        "delivered": dict(sorted(Counter(deliveries.values()).items())),
        "task_failures": dict(failures.most_common()),
        "task_retries": dict(retries.most_common()),
        "dispatches_refused": dict(dispatch_failed.most_common()),
        "copies_dropped": copies_dropped,
        "beat_errors": dict(beat_errors.most_common(10)),
    }


def _cause(message: str) -> str:
    if any(m in message for m in ("connection to server", "server closed", "terminating conn")):
        return "database unreachable"
    if any(m in message for m in ("connecting to", "Connection closed by server", "Errno")):
        return "broker unreachable"
    return re.sub(r"\d+", "N", message)[:60]


def attempts_read(space_id: int, started: datetime) -> dict:
    from payments.models import ChargeAttempt

    rows = list(
        ChargeAttempt.objects.filter(space_id=space_id).values(
            "pk", "purpose", "status", "last_error", "created_at", "finished_at"
        )
    )
    slow = sorted(
        (
            (r["finished_at"] - r["created_at"]).total_seconds(),
            r["pk"],
            r["purpose"],
            r["status"],
            r["last_error"],
            (r["created_at"] - started).total_seconds(),
        )
        for r in rows
        if r["finished_at"] is not None
    )[::-1]
    return {
        "attempts": len(rows),
        "by_status": dict(Counter(r["status"] for r in rows)),
        "interrupted": sum(1 for r in rows if r["last_error"]),
        "slowest": [
            {
                "seconds": round(s, 1),
                "attempt": pk,
                "purpose": p,
                "status": st,
                "error": e,
                "created_s": round(c, 1),
            }  # fmt: skip
            for s, pk, p, st, e, c in slow[:5]
        ],
    }


# --- The run ----------------------------------------------------------------------------------


def fault_near(at: float, faults: list[dict], visibility: float) -> str:
    """The fault a moment falls in: a cut (from its start to a few seconds after it ended),
    else a kill (until its worker's messages are back, a visibility timeout later)."""
    for fault in faults:
        if "cut" in fault["what"] and fault["at"] - 1 <= at <= fault["until"] + 5:
            return f"during the {fault['what']}"
    for fault in faults:
        if "killed" in fault["what"] and fault["at"] - 1 <= at <= fault["at"] + visibility + 10:
            return f"after {fault['what']}"
    return "no fault near"


def run(args) -> tuple[dict, int]:
    deadline = batch.Deadline(args.setup_limit)
    var_dir = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    proxies = Proxies()
    localstripe = broker = cluster = None
    database_url = None
    summary: dict = {"mode": "smoke" if args.smoke else "full"}
    try:
        server_url = args.database_url or os.environ.get("DATABASE_URL", "").strip()
        if urlsplit(server_url).scheme not in {"postgres", "postgresql", "pgsql"}:
            raise ChaosError(f"DATABASE_URL ({server_url or 'unset'}) is not a PostgreSQL server")
        database_url = database_create(server_url)
        broker = BrokerDb(broker_choose(args.broker_url), wait=args.lock_wait)
        localstripe, api_base = batch.localstripe_start(var_dir, seconds=30)

        db, red, stripe_url = urlsplit(database_url), urlsplit(broker.url), urlsplit(api_base)
        ports = {
            "database": proxies.add("database", db.hostname, db.port or 5432),
            "broker": proxies.add("broker", red.hostname, red.port or 6379),
            "provider": proxies.add("provider", stripe_url.hostname, stripe_url.port),
        }
        log(
            f"chaos: {summary['mode']} run; database {db.path.strip('/')} on "
            f"{db.hostname}:{db.port or 5432}, broker {broker.url}, localstripe {api_base}; "
            f"proxies on ports {ports}"
        )

        django_start(database_url, broker.url, api_base, var_dir, once=args.once)
        from django.db import connection
        from django.utils import timezone

        from chargeflows.services import LEASE

        setup_started = time.monotonic()
        customers = provider_customers(args.n, deadline)
        space_id, issue_ids = load_create(customers, timedelta(seconds=args.period))
        log(f"chaos: {args.n} collections set up in {time.monotonic() - setup_started:.0f}s")

        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "DATABASE_URL": _with(database_url, host="127.0.0.1", port=ports["database"]),
            "CELERY_BROKER_URL": _with(broker.url, host="127.0.0.1", port=ports["broker"]),
            "STRIPE_API_BASE": f"http://127.0.0.1:{ports['provider']}",
            "CELERY_VISIBILITY_TIMEOUT": str(args.visibility_timeout),
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "plain",
        }
        if args.beat_seconds:
            env["CHAOS_BEAT_SECONDS"] = str(args.beat_seconds)
        if args.once:
            env["CHAOS_DELIVER_ONCE"] = "1"
        cluster = Cluster(var_dir, env, args.workers)
        cluster.wait_ready(seconds=90)
        connection.close()

        # --- Start: the charges, the beat, then the faults on their schedule.
        started_at = timezone.now()
        t0 = time.monotonic()
        charges_publish(issue_ids)
        cluster.beat_start()
        # Each fault waits for its earliest time (the first after --fault-start, each next one
        # --fault-gap after the one before), then for a moment when the collections are busy
        # (at most --fault-patience s more), so that it meets work in flight, not an idle system.
        schedule = [("kill", "worker")] + [("cut", name) for name in CUT_ORDER]
        if args.no_faults:
            schedule = []
        earliest = args.fault_start
        faults: list[dict] = []
        watch = Watch(space_id, len(issue_ids))
        settled, next_note = 0, 30.0
        while True:
            elapsed = time.monotonic() - t0
            if schedule and elapsed >= earliest:
                if elapsed >= earliest + args.fault_patience or watch.busy():
                    kind, what = schedule.pop(0)
                    if kind == "kill":
                        killed, replacement = cluster.kill_worker(0)
                        faults.append(
                            {"at": elapsed, "until": elapsed,
                             "what": f"worker {killed} killed (replacement {replacement})"}
                        )  # fmt: skip
                    else:
                        cut = proxies.cut(what, args.cut)
                        faults.append(
                            {"at": elapsed, "until": elapsed + args.cut,
                             "what": f"{what} cut {args.cut:g}s", "cut": cut}
                        )  # fmt: skip
                    log(f"chaos: +{elapsed:5.1f}s {faults[-1]['what']}")
                    earliest = elapsed + max(args.fault_gap, args.cut + 1)
            cluster.supervise(elapsed)
            watch.sample()
            settled = watch.settled()
            cuts_over = all(f["cut"].ended for f in faults if "cut" in f)
            if settled == len(issue_ids) and not schedule and cuts_over:
                break
            if elapsed > args.bound:
                break
            if elapsed >= next_note:
                log(f"chaos: +{elapsed:5.0f}s settled {settled}/{len(issue_ids)}")
                next_note += 30.0
            time.sleep(1.0)
        run_seconds = time.monotonic() - t0
        log(f"chaos: +{run_seconds:5.1f}s stopping the workers and the beat")
        cluster.stop()

        # --- What happened.
        from chargeflows.models import ChargeFlowCase

        cases = list(
            ChargeFlowCase.objects.filter(space_id=space_id).values(
                "pk", "state", "created_at", "finished_at"
            )
        )
        finished = [c for c in cases if c["state"] in ("succeeded", "failed")]
        last = max(
            ((c["finished_at"] - started_at).total_seconds() for c in finished), default=None
        )
        durations = [(c["finished_at"] - c["created_at"]).total_seconds() for c in finished]
        waits = sorted(watch.waits.values(), key=lambda w: -w.seconds)
        lease_waits = [w for w in waits if lease_wait(w, LEASE)]
        long_waits = [w for w in waits if w.seconds >= LONG_WAIT_SECONDS]
        for fault in faults:
            cut = fault.pop("cut", None)
            if cut is not None:
                fault["connections_reset"] = cut.connections_reset

        level_runs = level_runs_read(cluster.nodes)
        killed = {node.name for node in cluster.killed}

        def wait_row(w: Wait) -> dict:
            due_s = (w.due_at - started_at).total_seconds()
            cause, at = wait_cause(w, level_runs.get(w.level_id, []), killed)
            return {
                "level": w.level_id,
                "case": w.case_id,
                "position": w.position,
                "step": w.step,
                "due_s": round(due_s, 1),
                "waited_s": round(w.seconds, 1),
                "lease_left_s": (
                    round((w.lease_until - w.due_at).total_seconds(), 1) if w.lease_until else None
                ),
                "lease_wait": w in lease_waits,
                "cause": cause,
                "near": fault_near(
                    (at - started_at).total_seconds(), faults, args.visibility_timeout
                ),
            }

        summary.update(
            {
                "collections": len(issue_ids),
                "settled": watch.settled(),
                "cases": len(cases),
                "cases_by_state": dict(Counter(c["state"] for c in cases)),
                "last_settled_s": round(last, 1) if last is not None else None,
                "bound_s": args.bound,
                "run_s": round(run_seconds, 1),
                "collection_median_s": round(statistics.median(durations or [0]), 1),
                "collection_max_s": round(max(durations or [0]), 1),
                "slowest_level_wait_s": round(waits[0].seconds, 1) if waits else 0.0,
                "level_waits_sampled": len(waits),
                "long_waits": [wait_row(w) for w in long_waits],
                "long_wait_count": len(long_waits),
                "lease_waits": len(lease_waits),
                "lease_s": LEASE.total_seconds(),
                "faults": faults,
                "restarts": [
                    {"at": round(a, 1), "node": n, "exit": c} for a, n, c in cluster.restarts
                ],
                "config": {
                    "workers": args.workers,
                    "processes_per_worker": 1,
                    "visibility_timeout_s": args.visibility_timeout,
                    "period_s": args.period,
                    "beat_s": args.beat_seconds or "production schedule",
                    "cut_s": args.cut,
                    "once": args.once,
                    "faults": not args.no_faults,
                },
                "attempts": attempts_read(space_id, started_at),
                "logs": logs_read(cluster.nodes),
                "money": money_check(space_id, api_base),
            }
        )
        summary["bound_met"] = (
            summary["settled"] == len(issue_ids)
            and last is not None
            and last <= args.bound
            and summary["lease_waits"] == 0
        )
    finally:
        if cluster is not None:
            cluster.stop()
        batch.django_stop()
        proxies.stop()
        batch.process_stop(localstripe)
        if broker is not None:
            broker.close()
        if database_url is not None and not args.keep_db:
            batch.postgres_drop(database_url)
        elif database_url is not None:
            log(f"chaos: database kept: {database_url}")
        if args.keep_logs:
            log(f"chaos: logs kept in {var_dir}")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)
    if not summary["money"]["holds"]:
        code = EXIT_INVARIANT
    elif not summary["bound_met"]:
        code = EXIT_BOUND
    else:
        code = EXIT_OK
    summary["exit"] = code
    return summary, code


# --- Report -----------------------------------------------------------------------------------


def report(s: dict) -> None:
    c, money, logs, attempts = s["config"], s["money"], s["logs"], s["attempts"]
    beat = c["beat_s"]
    if not isinstance(beat, str):
        beat = f"minute-scale beats every {beat:g}s"
    print()
    print(
        f"{s['collections']} collections; {c['workers']} workers x {c['processes_per_worker']} "
        f"process, acks late, visibility timeout {c['visibility_timeout_s']}s; levels of "
        f"{c['period_s']:g}s; beat: {beat}; "
        f"every task published {'once (control run)' if c['once'] else 'twice'}"
    )
    print(
        "faults: "
        + ("none (control run)" if not s["faults"] else "")
        + "; ".join(
            f"+{f['at']:.0f}s {f['what']}"
            + (f" ({f['connections_reset']} connections reset)" if "connections_reset" in f else "")
            for f in s["faults"]
        )
    )
    delivered = ", ".join(f"{k}x: {v}" for k, v in logs["delivered"].items())
    print(
        f"deliveries: {logs['task_ids']} task ids, {logs['deliveries']} taken by workers "
        f"(times per id, a retry keeping its id: {delivered}); copies not published (broker "
        f"cut): {logs['copies_dropped']}"
    )
    restarts = ", ".join(f"{r['node']} +{r['at']:.0f}s (exit {r['exit']})" for r in s["restarts"])
    print(f"restarted after exiting by themselves: {restarts or 'none'}")
    print(
        f"settled: {s['settled']}/{s['collections']} collections "
        f"({', '.join(f'{k} {v}' for k, v in sorted(s['cases_by_state'].items()))}); "
        f"last settled at +{s['last_settled_s']}s (bound {s['bound_s']:.0f}s); "
        f"collection median {s['collection_median_s']}s, longest {s['collection_max_s']}s"
    )
    print(
        f"slowest level wait beyond its due time: {s['slowest_level_wait_s']}s; "
        f"levels due {LONG_WAIT_SECONDS}s or more: {s['long_wait_count']}; "
        f"levels waiting out their {s['lease_s']:.0f}s lease: {s['lease_waits']}"
    )
    causes = Counter(w["cause"] for w in s["long_waits"])
    for cause, n in causes.most_common():
        near = Counter(w["near"] for w in s["long_waits"] if w["cause"] == cause)
        print(f"  {n:3d} x {cause} [{', '.join(f'{k}: {v}' for k, v in near.most_common())}]")
    for w in s["long_waits"][:12]:
        print(
            f"    level {w['level']} (case {w['case']}, level {w['position']}, step "
            f"{w['step']}): due at +{w['due_s']}s, waited {w['waited_s']}s under a lease of "
            f"{w['lease_left_s']}s"
        )
    print(
        f"attempts: {attempts['attempts']} "
        f"({', '.join(f'{k} {v}' for k, v in attempts['by_status'].items())}); "
        f"{attempts['interrupted']} had their provider call broken and were reconciled"
    )
    for a in attempts["slowest"][:3]:
        print(
            f"  attempt {a['attempt']} ({a['purpose']}, created +{a['created_s']}s): "
            f"{a['seconds']}s to {a['status']}{', ' + a['error'] if a['error'] else ''}"
        )
    if logs["task_failures"]:
        print("tasks that raised (acknowledged, not retried):")
        for what, n in list(logs["task_failures"].items())[:12]:
            print(f"  {n:4d} x {what}")
    if logs["task_retries"]:
        print("task runs retried (each retry is published, so copied, again):")
        for what, n in list(logs["task_retries"].items())[:12]:
            print(f"  {n:4d} x {what}")
    if logs["dispatches_refused"]:
        refused = ", ".join(f"{k} {v}" for k, v in logs["dispatches_refused"].items())
        print(f"dispatches the broker refused (logged; the beat sends them again): {refused}")
    if logs["beat_errors"]:
        print("beat errors:")
        for what, n in logs["beat_errors"].items():
            print(f"  {n:4d} x {what}")
    print(
        f"money: succeeded PaymentIntents at localstripe {money['succeeded_intents']} "
        f"(sum {money['succeeded_intents_sum']}), succeeded attempts {money['succeeded_attempts']} "
        f"(sum {money['succeeded_attempts_sum']}); ledger equal: "
        f"{'yes' if money['ledger_equal'] else 'NO'}; more than one per issue: "
        f"{money['doubled_issues'] or 'none'}; per level/link/issue charge: "
        f"{money['doubled_owners'] or 'none'}; collections inconsistent with their payments: "
        f"{money['cases_inconsistent'] or 'none'}"
    )
    for key in ("intents_without_attempt", "attempts_without_intent", "amount_mismatches"):
        if money[key]:
            print(f"  {key.replace('_', ' ')}: {money[key][:10]}")
    if money["unsettled_attempts"]:
        print(f"  attempts still unsettled at the end: {money['unsettled_attempts']}")
    verdict = {EXIT_OK: "PASS", EXIT_INVARIANT: "INVARIANT BROKEN", EXIT_BOUND: "BOUND EXCEEDED"}
    print(
        f"chaos: {verdict[s['exit']]} settled={s['settled']}/{s['collections']} "
        f"last_settled_s={s['last_settled_s']} bound_s={s['bound_s']:.0f} "
        f"slowest_level_wait_s={s['slowest_level_wait_s']} lease_waits={s['lease_waits']} "
        f"doubled={len(money['doubled_issues']) + len(money['doubled_owners'])} "
        f"ledger={'equal' if money['ledger_equal'] else 'DIFFERENT'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small and fast (make test)")
    parser.add_argument("--n", type=int, help="collections (full 200, smoke 6)")
    parser.add_argument("--bound", type=float, help="seconds to settle (full 420, smoke 200)")
    parser.add_argument("--period", type=float, help="seconds per level (full 90, smoke 8)")
    parser.add_argument(
        "--beat-seconds", type=float, help="run the minute-scale beats this often (smoke 2)"
    )
    parser.add_argument("--fault-start", type=float, help="first fault, s after the start")
    parser.add_argument("--fault-gap", type=float, help="least seconds between faults")
    parser.add_argument(
        "--fault-patience", type=float, help="most seconds a fault waits for a busy moment"
    )
    parser.add_argument("--cut", type=float, help="seconds each service is cut (full 5)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--visibility-timeout", type=int, default=25)
    parser.add_argument("--database-url", help="a PostgreSQL server (default DATABASE_URL)")
    parser.add_argument("--broker-url", help="a Redis database this run may empty")
    parser.add_argument("--lock-wait", type=float, default=600, help="wait for another run")
    parser.add_argument("--setup-limit", type=float, default=600)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--no-faults", action="store_true", help="a control run: no faults")
    parser.add_argument(
        "--once", action="store_true", help="a control run: every task published once"
    )
    args = parser.parse_args()
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.n < 3 or args.workers < 1 or args.period <= 0 or args.bound <= 0:
        parser.error("--n must be at least 3; --workers, --period and --bound positive")
    # A plain kill (or `timeout`) still stops what this started: the finally in run() runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        summary, code = run(args)
    except ChaosError as exc:
        print(f"chaos: could not run: {exc.message}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    report(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    sys.exit(code)


if __name__ == "__main__":
    main()
