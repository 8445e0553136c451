"""Our cost per charge against the provider's own cost, and SQL queries per charge.

Approves N charging issues and runs the charge task's service on each
(billing.services.charge_issue_charge, what the Celery task billing.charge_issue_charge runs:
payments.attempts' begin (claim the approved issue, commit the attempt), one PaymentIntent
create with confirm=True and off_session=True, and record (the outcome with the issue's state,
audit and outbound event)), timing every call. For a second, equivalent set of N
customers and cards it times the bare SDK call sequence of a charge
(payments.gateway.payment_intent_charge_off_session with the same argument shape, same client):
what the provider costs by itself. It prints the ratio ours/bare (the aim: at most 1.3) and the
SQL queries per charge (the aim: at most 12).

Run from the project root:

    .venv/bin/python bench/charge_batch.py [--n 1000] [--block 100] [--database-url URL]

How it runs:
- localstripe is started here on a free loopback port with its state in memory only, and the
  SDK is pointed at it (STRIPE_API_BASE).
- The database is PostgreSQL, as in production: by default
  postgres://postgres@127.0.0.1:5432/bench_charge, created when missing and then dropped at the
  end (a database that already existed is used as it is and left in place). When that default
  server cannot be reached, a temporary SQLite file is used instead and a note says so. Tables
  are made by `migrate`; settings are config.settings.local with DEBUG off (no query log) and
  VAR_DIR a temporary folder removed at the end.
- Setup is not timed: the provider customers and cards are made directly through the SDK
  (customer, card PaymentMethod, attach) and our Customer, PaymentCard and approved ChargeIssue
  rows are bulk-created.
- Side effects after the charge: recording an outcome sends payments.signals.attempt_settled on
  commit, whose billing receiver sends the outcome email task(s) with `.delay`. The Celery
  broker here is kombu's in-memory transport, so that publish is measured (it is part of
  our cost; on Redis it would be one more local round trip) but the task itself (e-mail,
  webhook) never runs: the figures are about the charge alone.
- Ours and bare run interleaved in blocks of --block charges (ours first in even blocks, bare
  first in odd ones), so drift on the machine and localstripe's growing store weigh on both
  sides alike. A few --warmup charges of each kind run first and are not counted.
  localstripe scans its whole store while answering a PaymentIntent (and again for its
  webhook event), so its cost per charge grows during the run and the ratio depends on --n;
  the per-block line shows that growth.
- Queries are counted with a database execute wrapper (what CaptureQueriesContext counts: the
  statements; the two COMMITs of the service's transactions are not among them, while on SQLite
  Django's two explicit BEGINs are).
- Afterwards every measured issue must be `succeeded` with one succeeded attempt, and
  localstripe must hold exactly one succeeded PaymentIntent for each of them, else it fails.

The figures depend on the machine; the ratio is the number to compare. It prints figures only:
nothing asserts a timing. --show-sql lists the statements of one charge.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_charge"
RATIO_AIM = 1.3
QUERIES_AIM = 12
TEST_CARD = "4242424242424242"


class BenchError(SystemExit):
    pass


class Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self, doing: str) -> None:
        if time.monotonic() > self.end:
            raise BenchError(
                f"time limit of {self.seconds:.0f}s reached while {doing}; "
                "use a smaller --n or a larger --time-limit"
            )


# --- localstripe ------------------------------------------------------------------------------


def localstripe_start(var_dir: Path, seconds: float) -> tuple[subprocess.Popen, str]:
    """localstripe on a free port, state in memory; returns the process and its base URL."""
    out, err = var_dir / "localstripe.out", var_dir / "localstripe.err"
    with out.open("w") as out_file, err.open("w") as err_file:
        proc = subprocess.Popen(
            [PY, str(ROOT / "scripts" / "localstripe_server.py"), "--port", "0", "--state", ""],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
        )
    prefix = "localstripe listening on "
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = out.read_text().split("\n", 1)[0] if out.stat().st_size else ""
        if line.startswith(prefix):
            url = line.removeprefix(prefix).strip()
            if _localstripe_answers(url, proc, err):
                return proc, url
        elif proc.poll() is not None:
            raise BenchError(f"localstripe exited ({proc.returncode}):\n{err.read_text()}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise BenchError(f"localstripe did not start within {seconds:.0f}s:\n{err.read_text()}")


def _localstripe_answers(url: str, proc: subprocess.Popen, err: Path) -> bool:
    import requests

    if proc.poll() is not None:
        raise BenchError(f"localstripe exited ({proc.returncode}):\n{err.read_text()}")
    try:
        requests.get(f"{url}/v1/customers", auth=("sk_test_localstripe", ""), timeout=2)
    except requests.RequestException:
        return False
    return True


def process_stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- Database ---------------------------------------------------------------------------------


def _admin_url(url: str) -> tuple[str, str]:
    """The server's `postgres` database URL and the database name of `url`."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise BenchError(f"no database name in {url}")
    return urlunsplit(parts._replace(path="/postgres")), name


def postgres_prepare(url: str) -> bool:
    """Create the database when missing; True if this run created it (and must drop it)."""
    import psycopg
    from psycopg import sql

    admin, name = _admin_url(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            print(f"note: database {name} already exists; using it and leaving it in place")
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def postgres_drop(url: str) -> None:
    import psycopg
    from psycopg import sql

    admin, name = _admin_url(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_choose(requested: str | None, var_dir: Path) -> tuple[str, bool, str]:
    """(DATABASE_URL, created by us, where it is for the report)."""
    url = requested or DEFAULT_DATABASE_URL
    scheme = urlsplit(url).scheme
    if scheme not in {"postgres", "postgresql", "pgsql", "psql"}:
        return url, False, url
    try:
        created = postgres_prepare(url)
    except Exception as exc:  # psycopg.OperationalError and friends
        if requested:
            raise BenchError(f"PostgreSQL at {url} is not usable: {exc}") from exc
        sqlite = var_dir / "db.sqlite3"
        print(f"note: PostgreSQL at {url} is unreachable ({str(exc).strip().splitlines()[0]});")
        print(f"      using a temporary SQLite file instead ({sqlite})")
        return f"sqlite:///{sqlite}", False, "SQLite (temporary file; PostgreSQL unreachable)"
    host = urlsplit(url)
    return url, created, f"PostgreSQL {host.hostname}:{host.port or 5432}{host.path}"


def django_start(database_url: str, var_dir: Path, stripe_api_base: str) -> None:
    # Explicit, so values in the developer's shell never point the bench elsewhere.
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ["DATABASE_URL"] = database_url
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ["DEBUG"] = "false"  # DEBUG on would log every query: a cost production has not
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["CELERY_BROKER_URL"] = "memory://localhost/"
    os.environ["EMAIL_URL"] = "memorymail://"
    os.environ["CACHE_URL"] = "locmemcache://"
    os.environ["STRIPE_API_BASE"] = stripe_api_base
    os.environ["STRIPE_SECRET_KEY"] = "sk_test_localstripe"
    os.environ["STRIPE_PUBLISHABLE_KEY"] = "pk_test_localstripe"
    sys.path.insert(0, str(ROOT))

    import django
    from django.core.management import call_command

    django.setup()
    from config import celery_app

    celery_app.conf.task_always_eager = False
    call_command("migrate", interactive=False, verbosity=0)


def django_stop() -> None:
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


# --- Setup (not timed) ------------------------------------------------------------------------


def provider_cards(count: int, label: str, deadline: Deadline) -> list[tuple[str, str]]:
    """`count` provider customers, each with an attached card: (customer id, payment method)."""
    from payments import gateway

    sdk = gateway.client().v1
    made = []
    for i in range(count):
        customer = sdk.customers.create(
            params={"name": f"{label} {i}", "email": f"{label}-{i}@bench.invalid"}
        )
        method = sdk.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": TEST_CARD, "exp_month": 6, "exp_year": 2034, "cvc": "123"},
            }
        )
        sdk.payment_methods.attach(method.id, params={"customer": customer.id})
        made.append((customer.id, method.id))
        if i % 100 == 99:
            deadline.check(f"creating provider customers ({label})")
    return made


def issues_create(cards: list[tuple[str, str]]) -> list[int]:
    """Approved, due issues for these provider cards, with our Customer and PaymentCard rows."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from billing.models import ChargeIssue
    from cards.models import Customer, PaymentCard
    from spaces.models import Space

    stamp = time.time_ns()
    space = Space.objects.create(
        name="Bench charges", slug=f"bench-charge-{stamp}", max_charge_minor=10**12
    )
    users = get_user_model().objects
    clerk = users.create_user(f"bench-clerk-{stamp}", password=None)
    approver = users.create_user(f"bench-approver-{stamp}", password=None)

    customers = Customer.objects.bulk_create(
        Customer(
            space=space,
            name=f"Bench customer {i}",
            email=f"bench-{i}@bench.invalid",
            provider_customer_id=customer_id,
        )
        for i, (customer_id, _) in enumerate(cards)
    )
    payment_cards = PaymentCard.objects.bulk_create(
        PaymentCard(
            space=space,
            customer=customer,
            provider_payment_method_id=method_id,
            brand="Visa",
            last4=TEST_CARD[-4:],
            exp_month=6,
            exp_year=2034,
            is_default=True,
        )
        for customer, (_, method_id) in zip(customers, cards, strict=True)
    )
    now = timezone.now()
    issues = ChargeIssue.objects.bulk_create(
        ChargeIssue(
            space=space,
            customer=customer,
            card=card,
            source=ChargeIssue.Source.STAFF,
            customer_name=customer.name,
            customer_email=customer.email,
            provider_customer_id=customer.provider_customer_id,
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
        for i, (customer, card) in enumerate(zip(customers, payment_cards, strict=True))
    )
    return [issue.pk for issue in issues]


# --- Measuring --------------------------------------------------------------------------------


class QueryCounter:
    """Counts (and optionally keeps) the statements sent through Django's connection."""

    def __init__(self):
        self.count = 0
        self.keep: list[str] | None = None

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        if self.keep is not None:
            self.keep.append(sql)
        return execute(sql, params, many, context)


def ours_run(issue_ids: list[int], counter: QueryCounter) -> tuple[list[float], list[int]]:
    from billing.services import charge_issue_charge

    seconds, queries = [], []
    clock = time.perf_counter
    for issue_id in issue_ids:
        before = counter.count
        start = clock()
        attempt = charge_issue_charge(issue_id=issue_id)
        seconds.append(clock() - start)
        queries.append(counter.count - before)
        if attempt is None or attempt.status != "succeeded":
            status = "not charged" if attempt is None else attempt.status
            raise BenchError(f"issue {issue_id}: {status}")
    return seconds, queries


def bare_run(cards: list[tuple[str, str]], offset: int, space_id: str) -> list[float]:
    from payments import gateway

    seconds = []
    clock = time.perf_counter
    for i, (customer_id, method_id) in enumerate(cards, start=offset):
        start = clock()
        result = gateway.payment_intent_charge_off_session(
            customer_id=customer_id,
            payment_method_id=method_id,
            amount_minor=1000 + i,
            currency="EUR",
            idempotency_key=f"bench-bare-{i}",
            metadata={"charge_issue": f"bare-{i}", "charge_attempt": str(i), "space": space_id},
        )
        seconds.append(clock() - start)
        if not result.succeeded:
            raise BenchError(f"bare charge {i}: {result.status} {result.message}")
    return seconds


def verify(issue_ids: list[int]) -> None:
    """Every issue succeeded once, and localstripe holds exactly one succeeded charge each."""
    from billing.models import ChargeIssue
    from payments import gateway
    from payments.models import ChargeAttempt

    states = ChargeIssue.objects.filter(pk__in=issue_ids).values_list("state", flat=True)
    wrong = [state for state in states if state != ChargeIssue.State.SUCCEEDED]
    if len(states) != len(issue_ids) or wrong:
        raise BenchError(f"{len(wrong)} of {len(issue_ids)} issues did not succeed: {wrong[:5]}")
    attempts = dict(
        ChargeAttempt.objects.filter(
            charge_issue_id__in=issue_ids, status=ChargeAttempt.Status.SUCCEEDED
        ).values_list("charge_issue_id", "provider_payment_intent_id")
    )
    if len(attempts) != len(issue_ids):
        raise BenchError(f"{len(attempts)} succeeded attempts for {len(issue_ids)} issues")

    ours = {str(pk) for pk in issue_ids}
    found: dict[str, list[str]] = {}
    page = gateway.client().v1.payment_intents.list(params={"limit": 100})
    for intent in page.auto_paging_iter():
        intent = intent.to_dict()
        issue = (intent.get("metadata") or {}).get("charge_issue")
        if issue in ours and intent["status"] == "succeeded":
            found.setdefault(issue, []).append(intent["id"])
    doubles = {k: v for k, v in found.items() if len(v) != 1}
    if len(found) != len(issue_ids) or doubles:
        raise BenchError(
            f"localstripe holds succeeded PaymentIntents for {len(found)} of "
            f"{len(issue_ids)} issues; more than one for {len(doubles)}"
        )
    mismatched = [pk for pk, pi in attempts.items() if found[str(pk)] != [pi]]
    if mismatched:
        raise BenchError(f"attempts not matching localstripe's PaymentIntent: {mismatched[:5]}")


def show_sql(issue_id: int, counter: QueryCounter) -> None:
    from billing.services import charge_issue_charge

    counter.keep = []
    try:
        charge_issue_charge(issue_id=issue_id)
        statements = counter.keep
    finally:
        counter.keep = None
    print(f"SQL statements of one charge (issue {issue_id}, {len(statements)}):")
    for n, statement in enumerate(statements, start=1):
        print(f"  {n:2d}. {statement[:300]}")


def measure(args, deadline: Deadline) -> dict:
    from django.db import connection

    from billing.models import ChargeIssue

    n, warmup = args.n, args.warmup
    setup_started = time.monotonic()
    extra = 1 if args.show_sql else 0
    ours_cards = provider_cards(n + warmup + extra, "ours", deadline)
    bare_cards = provider_cards(n + warmup, "bare", deadline)
    issue_ids = issues_create(ours_cards)
    space_id = str(ChargeIssue.objects.get(pk=issue_ids[0]).space_id)
    deadline.check("setting up")
    setup = time.monotonic() - setup_started

    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        if extra:
            show_sql(issue_ids.pop(), counter)
        ours_run(issue_ids[:warmup], counter)
        bare_run(bare_cards[:warmup], 0, space_id)
        measured_ids, measured_cards = issue_ids[warmup:], bare_cards[warmup:]
        ours_s, queries, bare_s, blocks = [], [], [], []
        for b, first in enumerate(range(0, n, args.block)):
            ids = measured_ids[first : first + args.block]
            cards = measured_cards[first : first + args.block]
            if b % 2 == 0:
                o, q = ours_run(ids, counter)
                s = bare_run(cards, warmup + first, space_id)
            else:
                s = bare_run(cards, warmup + first, space_id)
                o, q = ours_run(ids, counter)
            ours_s += o
            queries += q
            bare_s += s
            blocks.append((sum(o) / len(o), sum(s) / len(s)))
            deadline.check(f"measuring (block {b + 1})")
    verify(measured_ids + issue_ids[:warmup])
    return {"ours": ours_s, "bare": bare_s, "queries": queries, "blocks": blocks, "setup": setup}


def report(args, results: dict, where: str, seconds: float) -> None:
    ours, bare, queries = results["ours"], results["bare"], results["queries"]
    n = len(ours)
    print(f"charges: {n} ours + {n} bare (blocks of {args.block}, {args.warmup} warm-up each)")
    print(f"database: {where}")
    for label, values in (("ours", ours), ("bare SDK", bare)):
        print(
            f"{label:>8}: total {sum(values):7.2f} s, per charge mean "
            f"{1000 * sum(values) / n:6.2f} ms, median {1000 * statistics.median(values):6.2f} ms"
        )
    ratio = sum(ours) / sum(bare)
    median_ratio = statistics.median(ours) / statistics.median(bare)
    print(f"ratio ours/bare: {ratio:.2f} (aim <= {RATIO_AIM}); of medians {median_ratio:.2f}")
    print(f"ours minus bare per charge: {1000 * (sum(ours) - sum(bare)) / n:.2f} ms")
    print(
        f"queries per charge: mean {statistics.mean(queries):.1f}, max {max(queries)} "
        f"(aim <= {QUERIES_AIM})"
    )
    blocks = ", ".join(f"{1000 * o:.0f}/{1000 * b:.0f}" for o, b in results["blocks"])
    print(f"per block, ours/bare ms per charge: {blocks}")
    print(f"setup (not timed): {results['setup']:.0f} s; whole run: {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="charges of each kind")
    parser.add_argument("--block", type=int, default=100, help="charges per interleaved block")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted charges of each kind")
    parser.add_argument(
        "--database-url", help=f"default {DEFAULT_DATABASE_URL} (else temporary SQLite)"
    )
    parser.add_argument("--show-sql", action="store_true", help="list one charge's statements")
    parser.add_argument(
        "--time-limit", type=float, default=900.0, help="give up after this many seconds"
    )
    args = parser.parse_args()
    if args.n < 1 or args.block < 1 or args.warmup < 0:
        parser.error("--n and --block must be positive, --warmup not negative")
    started = time.monotonic()
    deadline = Deadline(args.time_limit)

    var_dir = Path(tempfile.mkdtemp(prefix="bench-charge-"))
    localstripe = None
    database_url, drop_database = None, False
    try:
        localstripe, api_base = localstripe_start(var_dir, seconds=30)
        database_url, drop_database, where = database_choose(args.database_url, var_dir)
        django_start(database_url, var_dir, api_base)
        results = measure(args, deadline)
    finally:
        django_stop()
        process_stop(localstripe)
        if drop_database:
            postgres_drop(database_url)
        shutil.rmtree(var_dir, ignore_errors=True)
    report(args, results, where, time.monotonic() - started)


if __name__ == "__main__":
    main()
