"""The admin's changelists, searches and deep pages with 10,000 and with 1,000,000 charging issues.

It fills PostgreSQL with SQL `INSERT … SELECT generate_series` (not the ORM row by row): four
spaces of uneven size (half the rows in the first), customers (one per five issues, each with a
card), charging issues over two years in realistic states, about 4.6 history events per issue,
an attempt for each issue that reached the provider (about 0.86 per issue), a collection case
for the failed and collecting ones with the levels it reached (the third with its payment link),
and a recurring line for one customer in twenty. Then VACUUM ANALYZE, and each page is requested
through Django's test Client as a logged-in admin of the largest space and as a superuser: the
median time of `--repeat` requests (after one warm-up) and the number of SQL queries each page
made. The 1,000,000 figures are the 10,000 fill grown by the rest (customers, issues and
everything hanging off them).

Aim (issue 12 §8): every page under 300 ms at 1,000,000 issues on this machine, with the same
query count as at 10,000.

Run from the project root:

    .venv/bin/python bench/admin_scale.py [--database-url URL] [--repeat 5] [--large 1000000]

The database (default postgres://postgres@127.0.0.1:5432/bench_admin_scale) is created,
migrated and dropped at the end. Figures only: nothing asserts a timing.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_admin_scale"
SMALL = 10_000
ISSUES_PER_CUSTOMER = 5
# Share of customers (and so of issues) per space, in tenths: the bench user works in the first.
SPACE_TENTHS = (5, 3, 1, 1)
MS_AIM = 300.0

FIRST_NAMES = "Anna Ben Clara David Erika Felix Greta Hugo Ida Jonas Kenji Lena Max Nora Oskar"
LAST_NAMES = "Bauer Fischer Meyer Mustermann Schmidt Schulz Tanaka Wagner Weber Yamada Suzuki"


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


def _spaces_and_users():
    """Four spaces (their default flows made by the ORM), an admin of the first, a superuser."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from chargeflows.models import ChargeFlow
    from spaces.models import Space, SpaceMembership
    from spaces.roles import ADMIN

    spaces = [
        Space.objects.create(name=f"Shop {n}", slug=f"shop-{n}", default_currency="EUR")
        for n in range(1, len(SPACE_TENTHS) + 1)
    ]
    flows = {space.pk: ChargeFlow.objects.filter(space=space).first().pk for space in spaces}
    User = get_user_model()
    staff = User.objects.create_user("bench-admin", "bench-admin@example.test", is_staff=True)
    staff.groups.add(Group.objects.get(name=ADMIN))
    SpaceMembership.objects.create(space=spaces[0], user=staff)
    superuser = User.objects.create_superuser("bench-root", "bench-root@example.test")
    return spaces, flows, staff, superuser


def _space_case(spaces) -> str:
    """SQL mapping a customer number `rn` to its space id by SPACE_TENTHS."""
    arms, upper = [], 0
    for space, tenths in zip(spaces, SPACE_TENTHS, strict=True):
        upper += tenths
        arms.append(f"WHEN rn % 10 < {upper} THEN {space.pk}")
    return "CASE " + " ".join(arms) + " END"


def _fill(spaces, flows, customers: tuple[int, int], issues: tuple[int, int], total: int):
    """Customers numbered customers[0]+1..customers[1] and issues issues[0]+1..issues[1], with
    their cards, events, attempts, cases and recurring lines. `total` spreads the issues' dates
    over two years as if the largest fill were there."""
    from django.db import connection

    c_lo, c_hi = customers
    i_lo, i_hi = issues
    first = "{" + ",".join(FIRST_NAMES.split()) + "}"
    last = "{" + ",".join(LAST_NAMES.split()) + "}"
    nf, nl = len(FIRST_NAMES.split()), len(LAST_NAMES.split())
    flow_case = (
        "CASE i.space_id " + " ".join(f"WHEN {s} THEN {f}" for s, f in flows.items()) + " END"
    )
    with connection.cursor() as cursor:
        # The rows are consistent by construction; the foreign keys (deferred, so queued per
        # row until commit) would make the fill ten times slower. Needs a superuser.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            """CREATE TABLE IF NOT EXISTS bench_customer (rn int PRIMARY KEY, customer_id bigint,
               card_id bigint, space_id bigint, name text, email text, pcus text)"""
        )
        cursor.execute(
            f"""INSERT INTO cards_customer (space_id, name, email, preferred_language,
                external_number, provider_customer_id, tags, created_at, updated_at)
            SELECT {_space_case(spaces)}, f || ' ' || l,
                   lower(f) || '.' || lower(l) || rn || '@example.test',
                   (ARRAY['en','de','ja'])[1 + rn % 3], 'K' || lpad(rn::text, 7, '0'),
                   'cus_' || substr(md5('cus' || rn), 1, 14), '',
                   now() - interval '800 days' + interval '1 minute' * rn, now()
            FROM (SELECT rn, ('{first}'::text[])[1 + rn % {nf}] AS f,
                         ('{last}'::text[])[1 + (rn / {nf}) % {nl}] AS l
                  FROM generate_series({c_lo + 1}, {c_hi}) rn) names
            ORDER BY rn"""
        )
        cursor.execute(
            """INSERT INTO cards_paymentcard (space_id, customer_id, provider_payment_method_id,
                brand, last4, exp_month, exp_year, fingerprint, status, is_default, lookup_key,
                created_at)
            SELECT space_id, id, 'pm_' || substr(md5('pm' || id), 1, 24),
                   (ARRAY['Visa','Mastercard','Amex'])[1 + id % 3],
                   lpad((id * 37 % 10000)::text, 4, '0'), 1 + id % 12, 2027 + id % 6, '',
                   CASE WHEN id % 50 = 0 THEN 'detached' ELSE 'active' END, true, '', created_at
            FROM cards_customer WHERE id > (SELECT coalesce(max(customer_id), 0)
                                            FROM bench_customer)"""
        )
        cursor.execute(
            f"""INSERT INTO bench_customer
            SELECT row_number() OVER (ORDER BY c.id) + {c_lo}, c.id, p.id, c.space_id, c.name,
                   c.email, c.provider_customer_id
            FROM cards_customer c JOIN cards_paymentcard p ON p.customer_id = c.id
            WHERE c.id > (SELECT coalesce(max(customer_id), 0) FROM bench_customer)"""
        )
        # States by g % 100: 86 % reached the provider (succeeded, failed, collecting, charging).
        cursor.execute(
            f"""INSERT INTO billing_chargeissue (space_id, customer_id, card_id, source,
                external_reference, customer_name, customer_email, provider_customer_id,
                card_last4, amount_minor, currency, notification_subject, notification_body,
                charge_date, state, failure_code, failure_message, hard_decline, created_at,
                updated_at)
            SELECT b.space_id, b.customer_id, b.card_id,
                   (ARRAY['api','api','card_registered','staff','recurring'])[1 + g % 5],
                   'ORD-' || lpad(g::text, 8, '0'), b.name, b.email, b.pcus,
                   lpad((b.card_id * 37 % 10000)::text, 4, '0'),
                   CASE WHEN s.state = 'awaiting_amount' THEN NULL ELSE 500 + g * 13 % 90000 END,
                   'EUR', '', '', NULL, s.state,
                   CASE WHEN s.state IN ('failed', 'collecting') THEN 'card_declined' ELSE '' END,
                   '', false, t.at, t.at
            FROM generate_series({i_lo + 1}, {i_hi}) g
            -- The customer by a hash of g: a multiplicative one would tie the customer's
            -- space (rn % 10) to g % 10 and so to the state (g % 100).
            JOIN bench_customer b
              ON b.rn = 1 + ('x' || substr(md5('i' || g), 1, 8))::bit(32)::bigint % {c_hi}
            CROSS JOIN LATERAL (SELECT CASE
                WHEN g % 100 < 68 THEN 'succeeded' WHEN g % 100 < 76 THEN 'failed'
                WHEN g % 100 < 85 THEN 'collecting' WHEN g % 100 < 86 THEN 'charging'
                WHEN g % 100 < 92 THEN 'awaiting_amount' WHEN g % 100 < 95 THEN 'awaiting_approval'
                WHEN g % 100 < 96 THEN 'returned' WHEN g % 100 < 98 THEN 'approved'
                ELSE 'cancelled' END AS state) s
            CROSS JOIN LATERAL (SELECT now() - interval '730 days'
                + interval '730 days' * g / {total} + interval '1 second' * (g % 600) AS at) t
            ORDER BY g"""
        )
        new = "id > (SELECT coalesce(max(issue_id), 0) FROM billing_chargeissueevent)"
        cursor.execute(
            f"""INSERT INTO billing_chargeissueevent (issue_id, actor_id, action, from_state,
                to_state, comment, detail, created_at)
            SELECT i.id, NULL, (ARRAY['started','amount_entered','approved','charge_started',
                   'charge_result'])[n], '', i.state, '', '{{}}'::jsonb,
                   i.created_at + interval '1 hour' * n
            FROM billing_chargeissue i, generate_series(1, 5) n
            WHERE i.{new} AND (n <= 4 OR i.id % 5 < 3)"""
        )
        new = "id > (SELECT coalesce(max(charge_issue_id), 0) FROM payments_chargeattempt)"
        cursor.execute(
            f"""INSERT INTO payments_chargeattempt (space_id, purpose, charge_issue_id,
                provider_customer_id, provider_payment_method_id, amount_minor, currency,
                idempotency_key, status, provider_payment_intent_id, provider_charge_id,
                failure_code, decline_code, failure_message, hard_decline, last_error,
                created_at, finished_at)
            SELECT i.space_id, 'issue_charge', i.id, i.provider_customer_id,
                   'pm_' || substr(md5('pm' || i.customer_id), 1, 24), i.amount_minor, 'EUR',
                   'issue-' || i.id,
                   CASE i.state WHEN 'succeeded' THEN 'succeeded' WHEN 'charging' THEN 'pending'
                        ELSE 'failed' END,
                   'pi_' || substr(md5('pi' || i.id), 1, 24),
                   'ch_' || substr(md5('ch' || i.id), 1, 24),
                   i.failure_code, CASE WHEN i.failure_code = '' THEN '' ELSE
                   (ARRAY['insufficient_funds','do_not_honor','expired_card'])[1 + i.id % 3] END,
                   '', false, '', i.created_at + interval '1 day',
                   i.created_at + interval '1 day'
            FROM billing_chargeissue i
            WHERE i.{new} AND i.state IN ('succeeded', 'failed', 'collecting', 'charging')"""
        )
        new = "id > (SELECT coalesce(max(issue_id), 0) FROM chargeflows_chargeflowcase)"
        cursor.execute(
            f"""INSERT INTO chargeflows_chargeflowcase (space_id, issue_id, flow_id, state,
                recipient_email, created_at, finished_at)
            SELECT i.space_id, i.id, {flow_case},
                   CASE i.state WHEN 'failed' THEN 'failed' ELSE 'running' END,
                   i.customer_email, i.created_at + interval '2 days',
                   CASE i.state WHEN 'failed' THEN LEAST(now(), i.created_at + interval '20 days')
                   END
            FROM billing_chargeissue i
            WHERE i.{new} AND i.state IN ('failed', 'collecting')"""
        )
        # The case's levels in its flow's order: a failed case went through all three; a
        # running one reached level 1, 2 or 3, which is pending and waits (for the end of its
        # period or the customer's payment link), the ones before it failed.
        new = "id > (SELECT coalesce(max(case_id), 0) FROM chargeflows_chargeflowlevel)"
        cursor.execute(
            f"""INSERT INTO chargeflows_chargeflowlevel (case_id, configuration_id, position,
                state, step, started_at, times_out_at, due_at, claimed_until, failures,
                finished_at)
            SELECT c.id, cfg.id, cfg.priority, s.state,
                   CASE s.state WHEN 'pending' THEN 'waiting' ELSE 'done' END,
                   c.created_at + interval '4 days' * (cfg.priority - 1),
                   c.created_at + interval '4 days' * cfg.priority,
                   CASE s.state WHEN 'pending' THEN c.created_at + interval '4 days' * cfg.priority
                   END, NULL, '[]'::jsonb,
                   CASE s.state WHEN 'failed' THEN c.created_at + interval '4 days' * cfg.priority
                   END
            FROM chargeflows_chargeflowcase c
            CROSS JOIN LATERAL (SELECT CASE c.state WHEN 'failed' THEN 3 ELSE 1 + c.id % 3 END
                                AS reached) r
            JOIN chargeflows_chargeflowlevelconfiguration cfg
              ON cfg.flow_id = c.flow_id AND cfg.priority <= r.reached
            CROSS JOIN LATERAL (SELECT CASE WHEN c.state = 'running' AND cfg.priority = r.reached
                                THEN 'pending' ELSE 'failed' END AS state) s
            WHERE c.{new}"""
        )
        # The third level sends the customer a payment link (still open while it waits).
        new = "id > (SELECT coalesce(max(level_id), 0) FROM chargeflows_chargeflowlevelpaymentlink)"
        cursor.execute(
            f"""INSERT INTO chargeflows_chargeflowlevelpaymentlink (level_id, expires_at, sent_at,
                used_at, retired_at, provider_payment_method_id, provider_payment_intent_id,
                payment_method_type, provider_setup_intent_id, keep_method, created_at)
            SELECT l.id, l.times_out_at, l.started_at, NULL, NULL, '', '', '', '', false,
                   l.started_at
            FROM chargeflows_chargeflowlevel l WHERE l.position = 3 AND l.{new}"""
        )
        cursor.execute(
            f"""INSERT INTO recurring_recurringline (space_id, customer_id, card_id, series,
                public_id, description, amount_minor, currency, "interval", cron, charge_date,
                status, card_lookup_key, generation, created_at, updated_at)
            SELECT b.space_id, b.customer_id, CASE WHEN b.rn % 40 = 0 THEN NULL ELSE b.card_id END,
                   gen_random_uuid(), gen_random_uuid(), 'Monthly box', 1990, 'EUR', 'monthly',
                   '', current_date + (b.rn % 60), 'active',
                   CASE WHEN b.rn % 40 = 0 THEN 'K' || lpad(b.rn::text, 7, '0') ELSE '' END,
                   0, now(), now()
            FROM bench_customer b WHERE b.rn > {c_lo} AND b.rn <= {c_hi} AND b.rn % 4 = 0"""
        )
        cursor.execute("SET session_replication_role = DEFAULT")
    # VACUUM too, not only ANALYZE: autovacuum would otherwise wake for the fresh rows during
    # the timed requests; and the visibility map lets index-only scans skip the heap.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def _pages(space_id: int) -> list[tuple[str, str]]:
    """(label, path) of the pages timed; the searches look for a row of the user's space."""
    from django.db import connection
    from django.urls import reverse

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT i.customer_email, i.external_reference, a.provider_payment_intent_id,
                      c.external_number
               FROM billing_chargeissue i JOIN payments_chargeattempt a ON a.charge_issue_id = i.id
               JOIN cards_customer c ON c.id = i.customer_id
               WHERE i.space_id = %s ORDER BY i.id LIMIT 1 OFFSET 777""",
            [space_id],
        )
        email, reference, intent, number = cursor.fetchone()
        cursor.execute(
            # A succeeded charge, the fullest page (its refund step asks what is left), at
            # both sizes: another state's page makes one query fewer.
            """SELECT id FROM billing_chargeissue WHERE space_id = %s AND state = 'succeeded'
               ORDER BY id DESC LIMIT 1""",
            [space_id],
        )
        (issue_id,) = cursor.fetchone()
    issues = "/admin/billing/chargeissue/"
    dashboard = reverse("admin:chargeflows_dashboard_space", args=[space_id])
    return [
        ("home (work queue)", "/admin/"),
        ("dashboard", dashboard),
        ("issues", issues),
        ("issues page 50", f"{issues}?p=50"),
        ("issues state filter", f"{issues}?state__exact=collecting"),
        ("issues space filter", f"{issues}?space__id__exact={space_id}"),
        ("issues search email", f"{issues}?q={email}"),
        ("issues search reference", f"{issues}?q={reference}"),
        ("issues search name", f"{issues}?q=Erika+Mustermann"),
        ("issue page (events)", f"{issues}{issue_id}/change/"),
        ("attempts", "/admin/payments/chargeattempt/"),
        ("attempts page 40", "/admin/payments/chargeattempt/?p=40"),
        ("attempts search intent", f"/admin/payments/chargeattempt/?q={intent}"),
        ("customers", "/admin/cards/customer/"),
        ("customers search email", f"/admin/cards/customer/?q={email}"),
        ("customers search number", f"/admin/cards/customer/?q={number}"),
        ("cards", "/admin/cards/paymentcard/"),
        ("cards search email", f"/admin/cards/paymentcard/?q={email}"),
        ("cases", "/admin/chargeflows/chargeflowcase/"),
        ("cases search reference", f"/admin/chargeflows/chargeflowcase/?q={reference}"),
        ("cases needing attention", "/admin/chargeflows/chargeflowcase/?queue=attention"),
        ("levels", "/admin/chargeflows/chargeflowlevelconfiguration/"),
        ("recurring lines", "/admin/recurring/recurringline/"),
        ("lines missing a card", "/admin/recurring/linemissingcard/"),
    ]


def _time_pages(users, pages, repeat: int) -> dict[tuple[str, str], tuple[float, float, int]]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    figures = {}
    for user in users:
        client = Client()
        client.force_login(user)
        for label, url in pages:
            times, sql_times, queries = [], [], 0
            for _ in range(repeat + 1):
                with CaptureQueriesContext(connection) as captured:
                    started = time.perf_counter()
                    response = client.get(url)
                    times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (url, response.status_code)
                queries = len(captured)
                sql_times.append(sum(float(q["time"]) for q in captured) * 1000)
            figures[(user.username, label)] = (
                statistics.median(times[1:]),
                statistics.median(sql_times[1:]),
                queries,
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (to EXPLAIN its queries)"
    )
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = args.database_url
    os.environ["DEBUG"] = "false"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(ROOT))
    _recreate(args.database_url)
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        spaces, flows, staff, superuser = _spaces_and_users()
        results, filled = {}, (0, 0)
        for size in (SMALL, args.large):
            started = time.perf_counter()
            customers = size // ISSUES_PER_CUSTOMER
            _fill(spaces, flows, (filled[0], customers), (filled[1], size), args.large)
            filled = (customers, size)
            setup = time.perf_counter() - started
            print(f"{size:>9,} issues filled in {setup:.0f} s", flush=True)
            results[size] = _time_pages([staff, superuser], _pages(spaces[0].pk), args.repeat)
        print(
            f"\nmedian time per page (of it in SQL) and queries\n{'page':<26}{'user':<12}"
            f"{SMALL:>20,} issues{args.large:>20,} issues"
        )
        worst = 0.0
        for (user, label), (small_ms, small_sql, small_q) in results[SMALL].items():
            large_ms, large_sql, large_q = results[args.large][(user, label)]
            worst = max(worst, large_ms)
            same = "" if small_q == large_q else "  (query count differs)"
            print(
                f"{label:<26}{user:<12}{small_ms:>8.0f} ms ({small_sql:>4.0f}) {small_q:>2} q"
                f"{large_ms:>13.0f} ms ({large_sql:>4.0f}) {large_q:>2} q{same}"
            )
        print(f"\nslowest page at {args.large:,}: {worst:.0f} ms median (aim < {MS_AIM:.0f} ms)")
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _drop(args.database_url)


if __name__ == "__main__":
    main()
