"""Card matching for recurring lines (seed 003) at 10,000 and at 1,000,000 lines.

For each size it prints:
- matching: what runs inside cards' transaction when one customer registers a card
  (recurring.services.recurring_lines_fill_for_card: lock that customer's active lines with an
  empty card and the card's key, fill them, one audit row each), median over --samples
  customers, each its own committed transaction;
- fallback scan: recurring.services.recurring_lines_fill_scan over every line, its time divided
  by the lines it filled;
- peak memory growth (RSS high-water mark, reset before the run, and Python's tracemalloc peak)
  of the two streaming tasks: the fallback scan and the generation task
  (recurring_lines_generate_due);
- crash halfway: a child process runs each streaming task and dies (os._exit, no clean-up)
  in the middle of a batch; the next run must leave every line handled exactly once.
Then the ratios 1,000,000 / 10,000. Aims: ratio <= 1.5, matching at 1,000,000 under 5 ms,
memory growth under 150 MB.

The data (made with SQL, not timed): customers with 4 lines each and one Visa card each; 1% of
the lines (the 4th line of every 25th customer) wait for a card with their own key, and half of
those customers also hold a matching card whose event was "lost" (no signal: the fallback scan's
work). --due lines (the first line of the first customers, with a card) are due today for the
generation task; the space's approval rule is 0, so their issues wait for an approver and no
provider is involved. So the scan walks the waiting lines (1% of all) and fills half of them:
its cost per filled line stays flat as the table grows because the partial index
recurring_awaiting_card_scan holds only waiting lines.

Run from the project root (PostgreSQL required; each size uses its own database, created and
dropped here):

    .venv/bin/python bench/card_matching.py [--sizes 10000,1000000] [--samples 200] [--due 2000]
        [--database-url postgres://postgres@127.0.0.1:5432/bench_card_matching]

It prints figures only: nothing asserts a timing (the crash checks do fail the run).
"""

import argparse
import os
import resource  # noqa: F401 - Linux only, like /proc below
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_card_matching"


def _admin(url):
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")


def db_create(url):
    import psycopg
    from psycopg import sql

    admin, name = _admin(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def db_drop(url):
    import psycopg
    from psycopg import sql

    admin, name = _admin(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def django_start(database_url, var_dir):
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ["DATABASE_URL"] = database_url
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ["DEBUG"] = "false"
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ["LOG_LEVEL"] = "WARNING"
    # One generation run over every due line is what is timed: no task deadline cuts it short
    # (production stops a run after TASK_DEADLINE_SECONDS and sends the rest on).
    os.environ["TASK_DEADLINE_SECONDS"] = "86400"
    import django

    django.setup()


# --- Memory -----------------------------------------------------------------------------------


def _status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measured(func, *, trace=False):
    """(result, seconds, RSS high-water growth MB, tracemalloc peak MB or None) of func().
    trace=True also follows Python's own allocations (tracemalloc), which slows Python code
    down: its timing is then not comparable."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    rss_before = _status_kb("VmRSS")
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - started
    peak = None
    if trace:
        peak = tracemalloc.get_traced_memory()[1] / 1024 / 1024
        tracemalloc.stop()
    growth = (_status_kb("VmHWM") - rss_before) / 1024
    return result, seconds, growth, peak


# --- Data -------------------------------------------------------------------------------------


def populate(n_lines, due):
    from django.db import connection
    from django.utils import timezone

    from spaces.models import Space

    space = Space.objects.create(name="Bench", slug="bench", default_currency="EUR")
    customers = n_lines // 4
    today = timezone.localdate()
    with connection.cursor() as cur:
        cur.execute(
            """INSERT INTO cards_customer (space_id, name, email, preferred_language,
                   external_number, created_at, updated_at)
               SELECT %s, 'C' || g, 'c' || g || '@bench.invalid', 'en', lpad(g::text, 7, '0'),
                      now(), now() FROM generate_series(1, %s) g""",
            [space.pk, customers],
        )
        cur.execute(
            """INSERT INTO cards_paymentcard (space_id, customer_id, provider_payment_method_id,
                   brand, last4, exp_month, exp_year, fingerprint, status, is_default,
                   lookup_key, created_at)
               SELECT space_id, id, 'pm_b' || id, 'Visa', '4242', 6, 2034, '', 'active', true,
                      external_number || '-Visa-4242-06/34', now()
               FROM cards_customer"""
        )
        # Line k of customer c: k < 3, or c not a multiple of 25: with the customer's card.
        # The 4th line of every 25th customer waits for a card keyed Visa 1111 01/31.
        cur.execute(
            """INSERT INTO recurring_recurringline (space_id, customer_id, series, public_id,
                   description, amount_minor, currency, interval, cron, charge_date, status,
                   card_id, card_lookup_key, generation, created_at, updated_at)
               SELECT c.space_id, c.id, gen_random_uuid(), gen_random_uuid(), 'line ' || k,
                      1000 + k, 'EUR', 'monthly', '',
                      CASE WHEN k = 0 AND c.rn <= %(due)s THEN %(today)s::date
                           ELSE %(today)s::date + (1 + c.id %% 28)::int END,
                      'active',
                      CASE WHEN k = 3 AND c.rn %% 25 = 0 THEN NULL ELSE p.id END,
                      CASE WHEN k = 3 AND c.rn %% 25 = 0
                           THEN c.external_number || '-Visa-1111-01/31' ELSE p.lookup_key END,
                      1, now(), now()
               FROM (SELECT *, row_number() OVER (ORDER BY id) rn FROM cards_customer) c
                    JOIN cards_paymentcard p ON p.customer_id = c.id
                    CROSS JOIN generate_series(0, 3) k""",
            {"due": due, "today": today},
        )
        # Every 50th customer already holds the matching card, but its event was lost.
        cur.execute(
            """INSERT INTO cards_paymentcard (space_id, customer_id, provider_payment_method_id,
                   brand, last4, exp_month, exp_year, fingerprint, status, is_default,
                   lookup_key, created_at)
               SELECT space_id, id, 'pm_lost' || id, 'Visa', '1111', 1, 2031, '', 'active',
                      false, external_number || '-Visa-1111-01/31', now()
               FROM (SELECT *, row_number() OVER (ORDER BY id) rn FROM cards_customer) c
               WHERE rn % 50 = 0"""
        )
        cur.execute("ANALYZE")
    return space


def matching_samples(samples):
    """Median ms of the token-side match for customers whose line waits (no card yet)."""
    from django.db import connection, transaction

    from cards.models import PaymentCard
    from recurring import services

    with connection.cursor() as cur:
        cur.execute(
            """SELECT id, space_id, external_number FROM (
                   SELECT *, row_number() OVER (ORDER BY id) rn FROM cards_customer) c
               WHERE rn %% 25 = 0 AND rn %% 50 <> 0 ORDER BY id DESC LIMIT %s""",
            [samples],
        )
        rows = cur.fetchall()
    timings, filled = [], 0
    for customer_id, space_id, number in rows:
        with transaction.atomic():
            card = PaymentCard.objects.create(
                space_id=space_id,
                customer_id=customer_id,
                provider_payment_method_id=f"pm_new{customer_id}",
                brand="Visa",
                last4="1111",
                exp_month=1,
                exp_year=2031,
                lookup_key=f"{number}-Visa-1111-01/31",
            )
            started = time.perf_counter()
            filled += services.recurring_lines_fill_for_card(card=card)
            timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000, filled, len(rows)


# --- Crash children ---------------------------------------------------------------------------


def child(kind, database_url, var_dir, batch, die_at):
    """Run one streaming task and die in the middle of it (at the die_at-th batch written, or
    line charged), like a killed worker."""
    django_start(database_url, var_dir)
    from django.db.models.query import QuerySet

    from recurring import services

    if kind == "scan":
        real = QuerySet.bulk_update
        calls = []

        def dying_bulk_update(self, *args, **kwargs):
            result = real(self, *args, **kwargs)
            calls.append(1)
            if len(calls) == die_at:
                os._exit(17)  # mid-transaction: the third batch's fill is written, not committed
            return result

        QuerySet.bulk_update = dying_bulk_update
        services.recurring_lines_fill_scan(batch_size=batch)
    else:
        billing_services = services.billing_services
        real = billing_services.charge_issue_start_recurring
        calls = []

        def dying_start(**kwargs):
            issue = real(**kwargs)
            calls.append(1)
            if len(calls) == die_at:
                os._exit(17)  # mid-transaction: the issue is written, not committed
            return issue

        billing_services.charge_issue_start_recurring = dying_start
        services.recurring_lines_generate_due(batch_size=batch)
    os._exit(0)


def crash_then_rerun(kind, database_url, var_dir, *, batch, die_at):
    command = [sys.executable, __file__, "--child", kind, "--database-url", database_url]
    command += ["--var-dir", str(var_dir), "--batch", str(batch), "--die-at", str(die_at)]
    code = subprocess.call(command)
    if code != 17:
        raise SystemExit(f"the {kind} child did not die halfway (exit {code})")


# --- One size ---------------------------------------------------------------------------------


def run_size(n, args, var_dir):
    from django.db.models import Count, Exists, OuterRef

    from billing.models import ChargeIssue
    from cards.models import PaymentCard
    from recurring import services
    from recurring.models import RecurringEvent, RecurringLine

    due = min(args.due, n // 4)
    started = time.perf_counter()
    populate(n, due)
    setup = time.perf_counter() - started
    waiting = RecurringLine.objects.filter(status="active", card__isnull=True).count()
    print(f"\n{n:,} lines (setup {setup:.0f}s; {waiting:,} waiting for a card)")

    match_ms, match_filled, match_customers = matching_samples(args.samples)
    print(
        f"  matching (one customer's new card): median {match_ms:.2f} ms "
        f"over {match_customers} customers ({match_filled} lines filled)"
    )

    # The fallback scan, timed on its own (no tracemalloc).
    filled, seconds, rss, _ = measured(lambda: services.recurring_lines_fill_scan())
    per_line_ms = seconds * 1000 / max(filled, 1)
    print(
        f"  fallback scan: {filled:,} lines filled in {seconds * 1000:.0f} ms = "
        f"{per_line_ms:.3f} ms per filled line; memory growth RSS {rss:.1f} MB"
    )

    # The same lost events again, for a crash halfway through the scan and the run that must
    # finish the job exactly once.
    by_scan = RecurringEvent.objects.filter(detail__by="fallback scan")
    RecurringLine.objects.filter(pk__in=by_scan.values("line_id")).update(card=None)
    by_scan.delete()
    waiting = RecurringLine.objects.filter(status="active", card__isnull=True).count()
    batch = max(2, waiting // 20)  # about 20 batches; the child dies writing the middle one's
    batches = -(-waiting // batch)
    crash_then_rerun("scan", args.database_url, var_dir, batch=batch, die_at=max(1, batches // 2))
    after_crash = by_scan.count()
    refilled, _, scan_rss, scan_peak = measured(services.recurring_lines_fill_scan, trace=True)
    total = by_scan.count()
    # Lines still waiting although their customer holds a matching active card: must be none.
    lost_expected = (
        RecurringLine.objects.filter(status="active", card__isnull=True)
        .filter(
            Exists(
                PaymentCard.objects.filter(
                    customer_id=OuterRef("customer_id"),
                    lookup_key=OuterRef("card_lookup_key"),
                    status="active",
                )
            )
        )
        .count()
    )
    doubled = by_scan.values("line_id").annotate(n=Count("pk")).filter(n__gt=1).count()
    print(
        f"    crash halfway: {after_crash} filled before the crash, {total} after the rerun "
        f"(of {filled}), {doubled} lines filled twice, {lost_expected} matchable lines left; "
        f"rerun memory growth RSS {scan_rss:.1f} MB, Python peak {scan_peak:.1f} MB"
    )

    crash_then_rerun("generate", args.database_url, var_dir, batch=100, die_at=due // 2)
    before = ChargeIssue.objects.count()
    made, gen_seconds, gen_rss, gen_peak = measured(
        services.recurring_lines_generate_due, trace=True
    )
    issues = ChargeIssue.objects.count()
    generated = RecurringLine.objects.filter(status="generated").count()
    second_gen = RecurringLine.objects.filter(generation=2).count()
    still_due = RecurringLine.objects.filter(
        status="active", generation=1, charge_date__lte=time.strftime("%Y-%m-%d")
    ).count()
    print(
        f"  generation task (after a crash halfway): {made:,} lines generated in "
        f"{gen_seconds:.1f} s (with tracemalloc); memory growth "
        f"RSS {gen_rss:.1f} MB, Python peak {gen_peak:.1f} MB"
    )
    print(
        f"    crash halfway: {before} issues before the rerun, {issues} after; {generated} "
        f"lines generated, {second_gen} next generations, {still_due} due lines left"
    )
    ok = (
        doubled == 0
        and issues == generated == second_gen == due
        and still_due == 0
        and not lost_expected
        and total == filled
    )
    if not ok:
        raise SystemExit("a crash lost or doubled work: see the figures above")
    return match_ms, per_line_ms, max(rss, scan_rss, gen_rss, scan_peak, gen_peak)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--due", type=int, default=2000)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--child", choices=["scan", "generate"], help=argparse.SUPPRESS)
    parser.add_argument("--var-dir")
    parser.add_argument("--batch", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--die-at", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.database_url, args.var_dir, args.batch, args.die_at)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as var_dir:
        for n in sizes:
            url = args.database_url + f"_{n}"
            db_create(url)
            try:
                # One process per size: a fresh memory baseline and its own database.
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        f"import sys; sys.argv=['x']; sys.path.insert(0, {str(ROOT)!r}); "
                        f"from bench.card_matching import size_main; "
                        f"size_main({n}, {args.samples}, {args.due}, {url!r}, {var_dir!r})",
                    ],
                    capture_output=True,
                    text=True,
                )
                sys.stdout.write(out.stdout)
                if out.returncode != 0:
                    sys.stderr.write(out.stderr[-4000:])
                    raise SystemExit(out.returncode)
                last = out.stdout.strip().splitlines()[-1].split()
                results[n] = tuple(float(x) for x in last[1:])
            finally:
                db_drop(url)
    if len(sizes) >= 2:
        small, large = results[sizes[0]], results[sizes[-1]]
        print(
            f"\nratio {sizes[-1]:,} / {sizes[0]:,}: matching {large[0] / small[0]:.2f}, "
            f"fallback per filled line {large[1] / small[1]:.2f} (aim: <= 1.5 each); "
            f"matching at {sizes[-1]:,}: {large[0]:.2f} ms (aim: < 5 ms); "
            f"largest memory growth {max(large[2], small[2]):.1f} MB (aim: < 150 MB)"
        )


def size_main(n, samples, due, database_url, var_dir):
    """One size, in its own process (a fresh memory baseline and its own database)."""
    django_start(database_url, var_dir)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    args = argparse.Namespace(samples=samples, due=due, database_url=database_url)
    match_ms, per_line_ms, rss = run_size(n, args, var_dir)
    print(f"RESULT {match_ms} {per_line_ms} {rss}")


if __name__ == "__main__":
    main()
