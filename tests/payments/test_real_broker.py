"""The real broker path: Celery worker processes taking charge tasks from Redis, acks late.

The rest of the suite runs tasks eagerly, so a lost worker and a redelivered message are only
simulated there. Here real `celery worker` processes (config.settings.test with CELERY_EAGER
off) share pytest-django's test database (transactional tests, so they see committed rows) and
the session's localstripe, and take tasks from a Redis database of their own:
TEST_REAL_BROKER_URL, by default the suite's CELERY_BROKER_URL with database 4 (5 if the suite
uses 4), so CI's Redis serves both without the suite's tasks and these mixing. It is flushed
before and after each test. A missing Redis is a failure, never a skip.

Exactly-once is counted where it matters: PaymentIntents at localstripe.
"""

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import redis
from celery import Celery
from django.conf import settings
from django.db import connection
from django.utils import timezone

from billing import services as billing_services
from billing.models import ChargeIssue
from payments import attempts
from payments.models import ChargeAttempt
from spaces.roles import APPROVER, CLERK
from tests.billing.conftest import register_card, space  # noqa: F401 - shared fixtures
from tests.factories import StaffUserFactory

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
CHARGE_TASK = "billing.charge_issue_charge"
# For the kill test: short, so a killed worker's message comes back within the test (the
# paused worker is killed within about a second). Other workers keep the settings' 600 s, so a
# slow task on a loaded machine is never redelivered while it still runs.
VISIBILITY_TIMEOUT = 5
# The paused worker is killed as soon as localstripe holds the charge; this only bounds a
# test that went wrong.
PAUSE_AFTER_PROVIDER_CALL = 60
# The runtime is matched loosely: the card-number masking filter on every log handler masks a
# runtime such as 0.1105371234567890123 (its 19 digits may pass Luhn) as *.*****************.
SUCCEEDED_LINE = re.compile(
    r"Task (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]+)\] succeeded in \S+s: (?P<result>\w+)"
)


def broker_url() -> str:
    explicit = os.environ.get("TEST_REAL_BROKER_URL", "").strip()
    if explicit:
        return explicit
    suite = urlsplit(settings.CELERY_BROKER_URL)
    if suite.scheme not in {"redis", "rediss"}:
        pytest.fail(
            f"the suite's broker {settings.CELERY_BROKER_URL} is not Redis: set "
            "TEST_REAL_BROKER_URL to a Redis database these tests may flush",
            pytrace=False,
        )
    db = "5" if suite.path.strip("/") == "4" else "4"
    return urlunsplit(suite._replace(path=f"/{db}"))


def _same_redis_db(a: str, b: str) -> bool:
    a, b = urlsplit(a), urlsplit(b)
    return (a.hostname, a.port, a.path.strip("/") or "0") == (
        b.hostname,
        b.port,
        b.path.strip("/") or "0",
    )


@pytest.fixture
def broker():
    """A Redis database of our own: emptied before and after, never the suite's broker or
    cache, and held by one test session at a time."""
    url = broker_url()
    for name in ("CELERY_BROKER_URL", "CACHE_URL"):
        other = os.environ.get(name, "")
        if other and _same_redis_db(url, other.replace("rediscache://", "redis://", 1)):
            pytest.fail(f"TEST_REAL_BROKER_URL {url} is the suite's {name}", pytrace=False)
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {url} is not reachable ({exc})", pytrace=False)
    # Two test sessions on one machine (parallel checkouts) would share this database and take
    # each other's messages: one session at a time holds it.
    lock = client.lock(LOCK_KEY, timeout=600, blocking_timeout=600)
    if not lock.acquire():
        pytest.fail(f"Redis database {url} stayed busy with another test session", pytrace=False)
    _empty(client)
    # Not the current app: the project's shared tasks keep running eagerly in this process.
    app = Celery("real-broker-test", set_as_current=False)
    # An explicit connection: Celery would otherwise take CELERY_BROKER_URL from the
    # environment, the suite's broker.
    connection = app.connection_for_write(url)

    def publish(task_name: str, *args) -> str:
        task_id = str(uuid.uuid4())
        app.send_task(task_name, args=list(args), task_id=task_id, connection=connection)
        return task_id

    yield url, client, publish
    connection.release()
    app.close()
    _empty(client)
    lock.release()
    client.close()


LOCK_KEY = "backoffice-real-broker-tests"


def _empty(client) -> None:
    """Every key of this database but the lock (what flushdb would do, the lock kept)."""
    for key in client.scan_iter(count=1000):
        if key.decode() != LOCK_KEY:
            client.delete(key)


def _database_url() -> str:
    """pytest-django's test database, as the workers must see it."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = f"{credentials}@" if credentials else ""
    host += f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{host}/{quote(db['NAME'], safe='')}"


class Worker:
    def __init__(self, name: str, proc: subprocess.Popen, log: Path):
        self.name, self.proc, self.log = name, proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, seconds: float = 45) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if f"{self.name}@" in self.output() and " ready." in self.output():
                return
            assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.output()}"
            time.sleep(0.2)
        raise AssertionError(f"worker {self.name} not ready within {seconds}s:\n{self.output()}")

    def results(self, task_name: str = CHARGE_TASK) -> dict[str, list[str]]:
        """Task id -> the results this worker logged for it."""
        found: dict[str, list[str]] = {}
        for match in SUCCEEDED_LINE.finditer(self.output()):
            if match["name"] == task_name:
                found.setdefault(match["id"], []).append(match["result"])
        return found

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): no goodbye, no ack."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)


@pytest.fixture
def start_worker(broker, localstripe, tmp_path):
    """Start `celery worker` processes on our broker; every one is killed (process group) at
    the end, whatever happened."""
    url, _, _ = broker
    started: list[Worker] = []

    def start(
        name: str, *, concurrency: int = 1, pause: float = 0, visibility_timeout: int = 600
    ) -> Worker:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": url,
            "CELERY_EAGER": "false",
            "CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout),
            "PAYMENTS_TEST_PAUSE_AFTER_PROVIDER_CALL_SECONDS": str(pause),
            # The session fixture pointed this process's settings at localstripe.
            "STRIPE_API_BASE": settings.STRIPE_API_BASE,
            "LOG_LEVEL": "INFO",
            "CONN_MAX_AGE": "0",
        }
        log = tmp_path / f"worker-{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    str(concurrency),
                    "--hostname",
                    f"{name}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
            )
        worker = Worker(name, proc, log)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


@pytest.fixture
def approved_issue(space, register_card):  # noqa: F811
    """A registered card's issue, amount entered and approved by two people, due now."""
    clerk = StaffUserFactory(username="clerk-rb", role=CLERK, spaces=[space])
    approver = StaffUserFactory(username="approver-rb", role=APPROVER, spaces=[space])

    def make(n: int = 0) -> ChargeIssue:
        registration = register_card(space, name=f"Kim Kunde {n}", email=f"kim{n}@example.test")
        issue = ChargeIssue.objects.get(customer=registration.customer)
        billing_services.charge_amount_enter(
            issue=issue,
            acting_user=clerk,
            amount=f"{12 + n}.34",
            currency="EUR",
            notification_subject="Your order",
            notification_body="We charge your card on file.",
            # Tomorrow, so approving does not dispatch the charge (in this process, eagerly).
            charge_date=timezone.now() + timedelta(days=1),
        )
        billing_services.charge_issue_approve(issue=issue, acting_user=approver)
        ChargeIssue.objects.filter(pk=issue.pk).update(charge_date=timezone.now())
        issue.refresh_from_db()
        return issue

    return make


def intents_of(localstripe, issue) -> list[dict]:
    """Every PaymentIntent localstripe holds for this issue's provider customer."""
    return [
        pi
        for pi in localstripe.list("payment_intents")
        if pi.get("customer") == issue.provider_customer_id
    ]


def wait_until(condition, seconds: float, what: str, *, diagnostics=lambda: ""):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {seconds}s\n{diagnostics()}")


def drained(redis_client) -> None:
    """Every message taken and acknowledged (the outcome emails the charges sent included)."""
    wait_until(
        lambda: redis_client.llen("celery") == 0 and redis_client.hlen("unacked") == 0,
        20,
        "the queue drained and every message acknowledged",
    )


def test_a_worker_killed_after_the_provider_call_charges_once_after_redelivery(
    broker, start_worker, approved_issue, localstripe
):
    _, redis_client, publish = broker
    issue = approved_issue()
    doomed = start_worker(
        "doomed", pause=PAUSE_AFTER_PROVIDER_CALL, visibility_timeout=VISIBILITY_TIMEOUT
    )
    doomed.wait_ready()

    task_id = publish(CHARGE_TASK, issue.pk)
    # The provider has charged; the worker now sits between the call and the record.
    wait_until(
        lambda: localstripe.list("charges", customer=issue.provider_customer_id),
        20,
        "a charge at localstripe",
        diagnostics=doomed.output,
    )
    doomed.kill()

    # Killed in the window: the attempt is committed, nothing is recorded, and the message
    # was taken but never acknowledged (still held for the dead worker, or, on a slow machine,
    # already put back by its own sweep).
    attempt = ChargeAttempt.objects.get(charge_issue=issue)
    assert attempt.status == ChargeAttempt.Status.PENDING
    assert ChargeIssue.objects.get(pk=issue.pk).state == ChargeIssue.State.CHARGING
    assert redis_client.hlen("unacked") + redis_client.llen("celery") == 1
    assert doomed.results() == {}

    # A new worker gets the same message back once the visibility timeout has passed; the
    # issue is no longer due, so running the task again calls nobody.
    survivor = start_worker("survivor", visibility_timeout=VISIBILITY_TIMEOUT)
    wait_until(
        lambda: task_id in survivor.results(),
        VISIBILITY_TIMEOUT + 40,
        "the killed worker's message redelivered and run",
        diagnostics=survivor.output,
    )
    assert survivor.results()[task_id] == ["False"]
    drained(redis_client)
    assert len(intents_of(localstripe, issue)) == 1
    assert ChargeAttempt.objects.get(pk=attempt.pk).status == ChargeAttempt.Status.PENDING

    # The reconciler finds the charge the killed worker made and records it.
    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 1

    intents = intents_of(localstripe, issue)
    assert [pi["status"] for pi in intents] == ["succeeded"]
    attempt.refresh_from_db()
    assert attempt.status == ChargeAttempt.Status.SUCCEEDED
    assert attempt.provider_payment_intent_id == intents[0]["id"]
    assert ChargeIssue.objects.get(pk=issue.pk).state == ChargeIssue.State.SUCCEEDED
    assert ChargeAttempt.objects.filter(charge_issue=issue).count() == 1


ISSUES = 20


def test_two_workers_given_every_charge_twice_charge_each_issue_once(
    broker, start_worker, approved_issue, localstripe
):
    _, redis_client, publish = broker
    issues = [approved_issue(n) for n in range(ISSUES)]
    workers = [start_worker(name, concurrency=2) for name in ("first", "second")]
    for worker in workers:
        worker.wait_ready()

    # Each issue's charge is sent twice in a row (a duplicate beat, a re-dispatch), so two
    # worker processes most likely take the two copies at the same moment.
    task_ids = []
    for issue in issues:
        for _ in range(2):
            task_ids.append(publish(CHARGE_TASK, issue.pk))

    def ran() -> dict[str, list[str]]:
        results: dict[str, list[str]] = {}
        for worker in workers:
            for task_id, values in worker.results().items():
                results.setdefault(task_id, []).extend(values)
        return results

    wait_until(
        lambda: len(ran()) == len(task_ids),
        45,
        "every charge message run",
        diagnostics=lambda: "\n".join(w.output() for w in workers),
    )
    results = ran()
    # Every message ran once; of each issue's two, exactly one charged.
    assert sorted(results) == sorted(task_ids)
    assert all(len(values) == 1 for values in results.values())
    charged = [values[0] for values in results.values()]
    assert charged.count("True") == ISSUES
    assert charged.count("False") == ISSUES
    # Both workers took charge messages: the race was between processes.
    assert all(worker.results() for worker in workers)

    intents = [pi for pi in localstripe.list("payment_intents")]
    for issue in issues:
        issue.refresh_from_db()
        mine = [pi for pi in intents if pi.get("customer") == issue.provider_customer_id]
        assert [pi["status"] for pi in mine] == ["succeeded"], issue.pk
        attempt = ChargeAttempt.objects.get(charge_issue=issue)
        assert attempt.status == ChargeAttempt.Status.SUCCEEDED
        assert attempt.provider_payment_intent_id == mine[0]["id"]
        assert issue.state == ChargeIssue.State.SUCCEEDED
    drained(redis_client)
