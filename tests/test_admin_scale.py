"""The admin lists at scale (issue 12 §8): a fixed number of queries whatever the number of
rows, searches answered by indexed lookups, one COUNT per page, a space filter read from the
spaces table, and the indexes the lists rely on. Timings live in bench/admin_scale.py."""

import re
from datetime import date, timedelta

import pytest
from django.contrib import admin
from django.db import connection
from django.db.models.sql import Query
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import ChargeIssue, ChargeIssueEvent
from billing.selectors import (
    CHARGE_ISSUE_QUEUE_STATES,
    charge_issue_open_counts,
    charge_issue_search,
)
from cards.models import Customer, PaymentCard
from cards.selectors import customer_search
from chargeflows.models import ChargeFlow, ChargeFlowCase, ChargeFlowLevelPaymentLink
from chargeflows.selectors import cases_needing_attention_q
from config.work_queue import work_queue_counts
from payments.models import ChargeAttempt
from payments.selectors import attempt_amounts_per_day
from recurring.models import RecurringLine
from spaces.roles import ADMIN, CLERK
from tests.factories import SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

CHANGELISTS = [
    "admin:billing_chargeissue_changelist",
    "admin:payments_chargeattempt_changelist",
    "admin:cards_customer_changelist",
    "admin:cards_paymentcard_changelist",
    "admin:chargeflows_chargeflowcase_changelist",
    "admin:chargeflows_chargeflowlevelconfiguration_changelist",
    "admin:recurring_recurringline_changelist",
    "admin:recurring_linemissingcard_changelist",
]
ISSUES = "admin:billing_chargeissue_changelist"


def _fill(space, count: int, *, start: int = 0) -> list[ChargeIssue]:
    """`count` customers, each with a card, a charged issue with two history events, an
    attempt, a collection case and a recurring line (bulk inserts, as many rows as asked)."""
    numbers = range(start, start + count)
    customers = Customer.objects.bulk_create(
        Customer(
            space=space,
            name=f"Erika Muster{n}",
            email=f"Erika.Muster{n}@Example.test",
            external_number=f"K{n:07d}",
            provider_customer_id=f"cus_scale{n}",
        )
        for n in numbers
    )
    cards = PaymentCard.objects.bulk_create(
        PaymentCard(
            space=space,
            customer=customer,
            provider_payment_method_id=f"pm_scale{n}",
            brand="Visa",
            last4=f"{n:04d}"[-4:],
            exp_month=6,
            exp_year=2034,
        )
        for n, customer in zip(numbers, customers, strict=True)
    )
    issues = ChargeIssue.objects.bulk_create(
        ChargeIssue(
            space=space,
            customer=card.customer,
            card=card,
            source=ChargeIssue.Source.API,
            external_reference=f"ORD-{n:06d}",
            customer_name=card.customer.name,
            customer_email=card.customer.email,
            provider_customer_id=card.customer.provider_customer_id,
            card_last4=card.last4,
            amount_minor=1000 + n,
            currency="EUR",
            state=ChargeIssue.State.COLLECTING,
        )
        for n, card in zip(numbers, cards, strict=True)
    )
    ChargeIssueEvent.objects.bulk_create(
        ChargeIssueEvent(issue=issue, action=action, to_state=issue.state)
        for issue in issues
        for action in ("started", "charge_result")
    )
    ChargeAttempt.objects.bulk_create(
        ChargeAttempt(
            space=space,
            purpose=ChargeAttempt.Purpose.ISSUE_CHARGE,
            charge_issue=issue,
            provider_customer_id=issue.provider_customer_id,
            provider_payment_method_id=issue.card.provider_payment_method_id,
            amount_minor=issue.amount_minor,
            currency="EUR",
            idempotency_key=f"issue-{issue.pk}",
            status=ChargeAttempt.Status.FAILED,
            provider_payment_intent_id=f"pi_scale{n}",
        )
        for n, issue in zip(numbers, issues, strict=True)
    )
    flow = ChargeFlow.objects.filter(space=space).first()
    ChargeFlowCase.objects.bulk_create(
        ChargeFlowCase(space=space, issue=issue, flow=flow, recipient_email=issue.customer_email)
        for issue in issues
    )
    RecurringLine.objects.bulk_create(
        RecurringLine(
            space=space,
            customer=card.customer,
            card=card if n % 2 else None,
            card_lookup_key="" if n % 2 else card.customer.external_number,
            description="Monthly box",
            amount_minor=1990,
            currency="EUR",
            charge_date=date(2030, 1, 1 + n % 28),
        )
        for n, card in zip(numbers, cards, strict=True)
    )
    return issues


@pytest.fixture
def space():
    return SpaceFactory(name="Shop", slug="shop")


@pytest.fixture
def other():
    """Another space with rows of its own, which the space's staff never see."""
    other = SpaceFactory(name="Other", slug="other")
    _fill(other, 3, start=9000)
    return other


@pytest.fixture
def staff(space):
    return StaffUserFactory(username="scale-admin", role=ADMIN, spaces=[space])


@pytest.fixture
def root():
    return StaffUserFactory(username="scale-root", is_superuser=True)


def _queries(client, url, **params) -> tuple[list[str], object]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params)
    assert response.status_code == 200, url
    return [query["sql"] for query in captured.captured_queries], response


@pytest.mark.parametrize("user", ["staff", "root"])
def test_every_list_costs_the_same_queries_for_3_and_40_rows(client, request, space, other, user):
    client.force_login(request.getfixturevalue(user))
    _fill(space, 3)
    urls = [reverse(name) for name in CHANGELISTS]
    for url in urls:
        client.get(url)  # warm the caches (content types, session) out of the count
    few = {url: len(_queries(client, url)[0]) for url in urls}
    few_search = len(_queries(client, reverse(ISSUES), q="erika ORD-000001")[0])

    _fill(space, 37, start=100)
    many = {url: len(_queries(client, url)[0]) for url in urls}
    sql, search = _queries(client, reverse(ISSUES), q="erika ORD-000001")

    assert many == few
    assert len(sql) == few_search
    assert [i.external_reference for i in search.context["cl"].result_list] == ["ORD-000001"]


def test_issue_search_finds_by_email_reference_provider_ids_number_and_name(
    client, space, other, staff
):
    issues = _fill(space, 12)
    target = issues[7]
    client.force_login(staff)
    url = reverse(ISSUES)

    def found(term):
        return [i.pk for i in client.get(url, {"q": term}).context["cl"].result_list]

    assert found("erika.muster7@example.TEST") == [target.pk]  # the email in any case
    assert found("ORD-000007") == [target.pk]
    assert found("cus_scale7") == [target.pk]  # provider customer id
    assert found("pi_scale7") == [target.pk]  # the provider payment intent of its charge
    assert found("K0000007") == [target.pk]  # the customer's number
    assert found(str(target.pk)) == [target.pk]
    assert found("0007") == [target.pk]  # the card's last 4
    assert found("muster7") == [target.pk]  # a part of the name
    assert found("Erika muster1") == [issues[11].pk, issues[10].pk, issues[1].pk]
    # Another space's issue is never found, even by its own reference.
    assert found("ORD-009000") == []


def test_other_lists_search_by_their_indexed_columns(client, space, other, staff):
    issues = _fill(space, 12)
    client.force_login(staff)

    def found(name, term):
        response = client.get(reverse(name), {"q": term})
        return [str(row) for row in response.context["cl"].result_list]

    customer = issues[3].customer
    assert found("admin:cards_customer_changelist", "ERIKA.MUSTER3@example.test") == [str(customer)]
    assert found("admin:cards_customer_changelist", "K0000003") == [str(customer)]
    assert found("admin:cards_customer_changelist", "0003") == [str(customer)]
    assert found("admin:cards_paymentcard_changelist", "erika.muster3@example.test") == [
        str(issues[3].card)
    ]
    assert found("admin:payments_chargeattempt_changelist", "pi_scale3") == [str(issues[3].attempt)]
    assert found("admin:payments_chargeattempt_changelist", "cus_scale3") == [
        str(issues[3].attempt)
    ]
    assert found("admin:chargeflows_chargeflowcase_changelist", "ORD-000003") == [
        str(issues[3].flow_case)
    ]
    assert found("admin:chargeflows_chargeflowcase_changelist", "ORD-009000") == []


def test_a_list_counts_only_its_own_rows(client, space, other, staff):
    _fill(space, 3)
    client.force_login(staff)
    for name in CHANGELISTS:
        model_admin = admin.site._registry[_model_of(name)]
        assert model_admin.show_full_result_count is False, name

    sql, response = _queries(client, reverse(ISSUES), state__exact="collecting")

    changelist = response.context["cl"]
    assert changelist.result_count == 3 and changelist.full_result_count is None
    # The list's own count (the sidebar's work-queue badges count other rows).
    assert len([q for q in sql if "COUNT(" in q.upper() and "'collecting'" in q]) == 1


def _model_of(url_name: str):
    app_label, model_name = url_name.removeprefix("admin:").removesuffix("_changelist").split("_")
    return next(
        model
        for model in admin.site._registry
        if (model._meta.app_label, model._meta.model_name) == (app_label, model_name)
    )


def test_the_space_filter_lists_the_users_spaces_from_the_spaces_table(client, space, other):
    _fill(space, 3)
    second = SpaceFactory(name="Second", slug="second")
    client.force_login(StaffUserFactory(role=ADMIN, spaces=[space, second]))

    sql, response = _queries(client, reverse(ISSUES))

    (space_filter,) = [f for f in response.context["cl"].filter_specs if f.title == "space"]
    assert [label for _, label in space_filter.lookup_choices] == ["Second", "Shop"]
    assert not [q for q in sql if "DISTINCT" in q.upper() and "billing_chargeissue" in q]


@pytest.mark.parametrize(
    ("table", "name", "columns"),
    [
        ("billing_chargeissue", "issue_created", ["created_at", "id"]),
        ("billing_chargeissue", "issue_external_reference", ["external_reference"]),
        ("billing_chargeissue", "issue_provider_customer", ["provider_customer_id"]),
        ("billing_chargeissue", "issue_card_last4", ["card_last4"]),
        ("billing_chargeissue", "issue_customer_email_upper", None),
        ("billing_chargeissue", "issue_customer_name_trgm", None),
        ("payments_chargeattempt", "attempt_provider_customer", ["provider_customer_id"]),
        ("cards_customer", "customer_name_order", ["name", "id"]),
        ("cards_customer", "customer_email_upper", None),
        ("cards_customer", "customer_external_number", ["external_number"]),
        ("cards_customer", "customer_name_trgm", None),
        ("cards_paymentcard", "paymentcard_created", ["created_at", "id"]),
        ("cards_paymentcard", "paymentcard_last4", ["last4"]),
        ("chargeflows_chargeflowcase", "flowcase_created", ["created_at", "id"]),
        ("chargeflows_chargeflowcase", "flowcase_recipient_upper", None),
        ("chargeflows_chargeflowcase", "flowcase_failed", ["finished_at"]),
        ("chargeflows_chargeflowlevelpaymentlink", "link_open", ["expires_at"]),
        ("billing_chargeissue", "issue_unfinished", ["space_id", "state", "entered_by_id"]),
        ("payments_chargeattempt", "attempt_succeeded_by_day", None),
    ],
)
def test_the_lists_indexes_exist(table, name, columns):
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    assert name in constraints and constraints[name]["index"]
    if columns is not None:
        assert constraints[name]["columns"] == columns
    if name.endswith("_trgm"):
        assert constraints[name]["type"] == "gin"


def _plan(queryset) -> str:
    # With sequential scans priced out, the plan shows whether an index can answer the query
    # at all (on a table this small PostgreSQL would rightly scan instead).
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    return queryset.explain()


def test_the_list_order_and_the_searches_are_answered_by_the_indexes(space):
    _fill(space, 3)
    issues = ChargeIssue.objects.all()

    assert "issue_created" in _plan(issues.order_by("-created_at", "-pk")[:100])
    # Unordered: otherwise the plan may walk the order's index and filter.
    by_name = _plan(charge_issue_search(queryset=issues, text="muster").order_by())
    by_email = _plan(
        charge_issue_search(queryset=issues, text="erika.muster1@example.test").order_by()
    )
    customers = _plan(customer_search(queryset=Customer.objects.all(), text="muster").order_by())

    assert "issue_customer_name_trgm" in by_name
    assert "issue_customer_email_upper" in by_email and "Seq Scan" not in by_email
    assert "customer_name_trgm" in customers


def _sql_of(call) -> list[str]:
    """The SQL of every query `call` makes, with its parameters in place."""
    with CaptureQueriesContext(connection) as captured:
        call()
    return [query["sql"] for query in captured.captured_queries]


def _in_order(sql: str) -> str:
    # The items of every IN (...) list sorted: the model's index lists its states in its
    # own order, a selector in another.
    return re.sub(r"IN \(([^()]*)\)", lambda m: f"IN ({', '.join(sorted(m[1].split(', ')))})", sql)


def _index_shape(model, name: str) -> tuple[list[str], set[str], list[str]]:
    """Of the model's index `name`, as declared in its Meta (its migration made it from
    there): the key columns, every column it holds (key and INCLUDE), and its predicate as
    SQL, one text per AND-ed condition, compiled by Django as it compiles a query's."""
    index = next(index for index in model._meta.indexes if index.name == name)
    key = [model._meta.get_field(field).column for field in index.fields]
    held = {*key, *(model._meta.get_field(field).column for field in index.include)}
    query = Query(model, alias_cols=False)
    where = query.build_where(index.condition)
    compiler = query.get_compiler(connection=connection)
    parts = [where] if where.negated else where.children
    return key, held, [_in_order(connection.ops.compose_sql(*compiler.compile(p))) for p in parts]


def _reads_of(sql: str, model) -> list[tuple[str, set[str]]]:
    """Each read of the model's table in `sql` (the query, or a subquery up to its UNION):
    its WHERE, with the table's own columns unqualified ("state") and other tables' still
    named by their alias (U1."state"); and the table's columns that SELECT reads."""
    table = model._meta.db_table
    reads = []
    for found in re.finditer(rf'FROM "{table}"(?: (U\d+))?', sql):
        select = sql[: found.start()].rsplit("SELECT", 1)[1] + sql[found.start() :]
        select = select.split(" UNION ", 1)[0]
        prefix = f"{found[1]}." if found[1] else f'"{table}".'
        after_from = _in_order(select[select.index(f'FROM "{table}"') :].replace(prefix, ""))
        if " WHERE " in after_from:
            columns = set(re.findall(rf'{re.escape(prefix)}"(\w+)"', select))
            reads.append((after_from.split(" WHERE ", 1)[1], columns))
    return reads


def _names(where: str, condition: str) -> bool:
    """`where` has `condition` on the table's own columns (not on another table's)."""
    return re.search(rf"(?<![.\w]){re.escape(condition)}", where) is not None


def _answerable(where: str, columns: set[str], model, name: str, index_only: bool) -> bool:
    key, held, predicate = _index_shape(model, name)
    # A condition the predicate implies needs no column of the index (`status` = 'succeeded'
    # of a partial index on succeeded attempts): PostgreSQL drops it from an index-only scan.
    in_predicate = {
        column for condition in predicate for column in re.findall(r'"(\w+)"', condition)
    }
    return (
        all(_names(where, condition) for condition in predicate)
        and re.search(rf'(?<![.\w])"{key[0]}" (=|>|>=|<|<=|IN) ', where) is not None
        and (not index_only or columns <= held | in_predicate)
    )


def assert_answerable_from_index(sql: str, model, name: str, *, index_only: bool = False):
    """PostgreSQL can answer a read of the model's table in `sql` from the partial index
    `name`: the read's WHERE carries every condition of the index's predicate (so the index
    holds every row it can want) and a condition on the index's first column (a range of
    the index, not all of it); with `index_only`, every column it reads is in the index."""
    reads = _reads_of(sql, model)
    assert any(_answerable(*read, model, name, index_only) for read in reads), (name, sql)


def test_the_work_queue_and_dashboard_counts_are_shaped_for_their_indexes(space):
    """Each count is written so that its index answers it. Asserted on the queries' shape,
    not on the plan: which of several usable indexes PostgreSQL prefers for a test's three
    rows follows the statistics, which change with what autovacuum last saw (this test
    failed once that way, issue 17 §9). bench/admin_scale.py shows the plans at a million."""
    _fill(space, 3)
    now = timezone.now()
    request = RequestFactory().get("/admin/")
    request.user = StaffUserFactory(username="scale-clerk", role=CLERK, spaces=[space])

    (queue_counts,) = [
        sql
        for sql in _sql_of(lambda: work_queue_counts(request=request))
        if 'FROM "billing_chargeissue"' in sql
    ]
    (open_counts,) = _sql_of(lambda: charge_issue_open_counts(space_id=space.pk))
    (attention,) = _sql_of(
        lambda: list(ChargeFlowCase.objects.filter(cases_needing_attention_q(now)).order_by())
    )
    (per_day,) = _sql_of(
        lambda: attempt_amounts_per_day(space_id=space.pk, since=now - timedelta(days=30))
    )

    # The sidebar's queue counts name the queue states: unfinished ones, so PostgreSQL proves
    # the rows lie in issue_unfinished (outside its excluded states), which holds every
    # column the counts read; and its first column, the space, narrows the range.
    unfinished = next(i for i in ChargeIssue._meta.indexes if i.name == "issue_unfinished")
    excluded = set(dict(unfinished.condition.children)["state__in"])
    assert unfinished.condition.negated and not excluded & set(CHARGE_ISSUE_QUEUE_STATES)
    ((where, columns),) = _reads_of(queue_counts, ChargeIssue)
    states = ", ".join(sorted(f"'{state}'" for state in CHARGE_ISSUE_QUEUE_STATES))
    assert _names(where, f'"state" IN ({states})'), queue_counts
    assert _names(where, '"space_id" IN (SELECT'), queue_counts
    assert columns <= _index_shape(ChargeIssue, "issue_unfinished")[1], queue_counts
    # The dashboard's open charges: the index's own predicate, its first column, its columns.
    assert_answerable_from_index(open_counts, ChargeIssue, "issue_unfinished", index_only=True)
    # The attention queue: the open links, and the collections that failed lately.
    assert_answerable_from_index(attention, ChargeFlowLevelPaymentLink, "link_open")
    assert_answerable_from_index(attention, ChargeFlowCase, "flowcase_failed")
    # The dashboard's amounts per day: a range of the space's succeeded charges, index only.
    assert_answerable_from_index(
        per_day, ChargeAttempt, "attempt_succeeded_by_day", index_only=True
    )
