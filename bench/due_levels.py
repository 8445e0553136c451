"""The runner's claim of due charge-flow levels, with few and with very many pending levels.

With 10,000 and then 1,000,000 pending ChargeFlowLevel rows in PostgreSQL, of which 2,000 are
due and the rest wait for their period to end (due later), it times
chargeflows.services.flow_levels_claim(limit=1000): the beat's claim of 1,000 due levels with
their lease (one UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)) and its commit. It prints
the median and the fastest of each size and their ratios (the machine is shared and noisy:
the fastest is the steadier figure).
Aim: ratio ≤ 1.5 and the 1,000,000 case under 50 ms. What keeps the claim independent of how
many levels wait: the partial index flow_level_due (pending levels with a due time), the lease
in an unindexed column on pages with free space (a HOT update writes no index entries), the
UPDATE finding the locked rows by ctid (no primary-key descent per row, whose 1,000 random
leaf pages grew with the table), and a commit that need not wait for its WAL flush (the lease
is soft state).

Run from the project root:

    .venv/bin/python bench/due_levels.py [--database-url URL] [--repeat 25]

The database (default postgres://postgres@127.0.0.1:5432/bench_due_levels) is created, migrated
and dropped at the end. Rows are made with INSERT … SELECT generate_series (not timed); after
each timed claim the claimed levels are put back to due (not timed). Figures only: nothing
asserts a timing.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_due_levels"
DUE = 2000
CLAIM = 1000
LEVELS_PER_CASE = 1000
RATIO_AIM, MS_AIM = 1.5, 50.0


def _admin_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")


def _recreate(url: str) -> None:
    import psycopg
    from psycopg import sql

    admin, name = _admin_url(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop(url: str) -> None:
    import psycopg
    from psycopg import sql

    admin, name = _admin_url(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _fill(pending: int) -> None:
    """`pending` pending levels over pending/1000 cases (one issue each), DUE of them due."""
    from django.db import connection
    from django.utils import timezone

    from billing.models import ChargeIssue
    from cards.models import Customer, PaymentCard
    from chargeflows.models import (
        ChargeFlow,
        ChargeFlowCase,
        ChargeFlowLevel,
        ChargeFlowLevelConfiguration,
    )
    from spaces.models import Space

    space = Space.objects.create(name="Bench", slug=f"bench-{pending}", default_currency="EUR")
    flow = ChargeFlow.objects.get(space=space)
    configuration = ChargeFlowLevelConfiguration.objects.filter(flow=flow).first()
    customer = Customer.objects.create(space=space, name="Bench", email="bench@example.test")
    card = PaymentCard.objects.create(
        space=space,
        customer=customer,
        provider_payment_method_id=f"pm_bench_{pending}",
        brand="Visa",
        last4="4242",
        exp_month=6,
        exp_year=2034,
    )
    cases = pending // LEVELS_PER_CASE
    q = connection.ops.quote_name
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {q(ChargeIssue._meta.db_table)} (space_id, customer_id, card_id,
                source, external_reference, customer_name, customer_email,
                provider_customer_id, card_last4, amount_minor, currency,
                notification_subject, notification_body, state, failure_code,
                failure_message, hard_decline, created_at, updated_at)
            SELECT %s, %s, %s, 'staff', 'bench-' || g, 'Bench', 'bench@example.test', 'cus_b',
                   '4242', 1000, 'EUR', '', '', 'collecting', '', '', false, %s, %s
            FROM generate_series(1, %s) g""",
            [space.pk, customer.pk, card.pk, now, now, cases],
        )
        cursor.execute(
            f"""INSERT INTO {q(ChargeFlowCase._meta.db_table)} (space_id, issue_id, flow_id,
                state, recipient_email, created_at)
            SELECT %s, i.id, %s, 'running', 'bench@example.test', %s
            FROM {q(ChargeIssue._meta.db_table)} i WHERE i.space_id = %s""",
            [space.pk, flow.pk, now, space.pk],
        )
        # The first DUE levels by number (position-major, so spread over the cases) are due;
        # the others wait up to a day.
        cursor.execute(
            f"""INSERT INTO {q(ChargeFlowLevel._meta.db_table)} (case_id, configuration_id,
                position, state, step, started_at, times_out_at, due_at, failures)
            SELECT c.id, %s, p, 'pending', 'waiting', %s, %s + interval '1 day',
                   CASE WHEN (p - 1) * %s + c.rn <= %s
                        THEN %s - interval '1 minute' * random()
                        ELSE %s + interval '1 minute' + interval '1 day' * random() END,
                   '[]'::jsonb
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn
                  FROM {q(ChargeFlowCase._meta.db_table)} WHERE space_id = %s) c,
                 generate_series(1, %s) p""",
            [
                configuration.pk,
                now,
                now,
                cases,
                DUE,
                now,
                now,
                space.pk,
                LEVELS_PER_CASE,
            ],
        )
        # VACUUM too, not only ANALYZE: otherwise autovacuum wakes for the million fresh rows
        # during the timed claims and competes with them for the machine's cores, so the
        # figure measured the vacuum as much as the claim.
        cursor.execute(f"VACUUM ANALYZE {q(ChargeFlowLevel._meta.db_table)}")


def _time_claims(repeat: int) -> tuple[float, float]:
    from django.utils import timezone

    from chargeflows import services
    from chargeflows.models import ChargeFlowLevel

    times = []
    for _ in range(repeat + 1):
        now = timezone.now()
        started = time.perf_counter()
        claimed = services.flow_levels_claim(now=now, limit=CLAIM)
        times.append((time.perf_counter() - started) * 1000)
        assert len(claimed) == CLAIM, len(claimed)
        # Released again, as if their runs had not started yet (not timed).
        ChargeFlowLevel.objects.filter(pk__in=[pk for pk, _ in claimed]).update(claimed_until=None)
    times = times[1:]  # the first run warms the caches
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = args.database_url
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    sys.path.insert(0, str(ROOT))
    _recreate(args.database_url)
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        figures = {}
        for pending in (10_000, 1_000_000):
            started = time.perf_counter()
            _fill(pending)
            setup = time.perf_counter() - started
            figures[pending] = _time_claims(args.repeat)
            median, fastest = figures[pending]
            print(
                f"{pending:>9,} pending levels ({DUE} due): claim of {CLAIM} in "
                f"{median:.1f} ms median, {fastest:.1f} ms fastest of {args.repeat} "
                f"(setup {setup:.0f} s)"
            )
            # The next size replaces this one, so each figure is about its own table size.
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM chargeflows_chargeflowlevel")
        (small, small_min), (large, large_min) = figures[10_000], figures[1_000_000]
        print(
            f"ratio 1,000,000 / 10,000: {large / small:.2f} on medians, "
            f"{large_min / small_min:.2f} on the fastest (aim ≤ {RATIO_AIM}); "
            f"1,000,000 case {large:.1f} ms median (aim < {MS_AIM:.0f} ms)"
        )
    finally:
        from django.db import connections

        connections.close_all()
        _drop(args.database_url)


if __name__ == "__main__":
    main()
