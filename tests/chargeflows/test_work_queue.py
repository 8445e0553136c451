"""The work queue's "Collections needing attention": running collections whose customer holds
an open payment link, and collections that ended without payment lately. Its count (the home
page and the sidebar badge) and the changelist's ?queue=attention filter answer the same rows,
and cost the same queries for few and many collections."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from chargeflows.models import ChargeFlowCase, ChargeFlowLevel, ChargeFlowLevelPaymentLink
from chargeflows.selectors import FAILED_CASE_ATTENTION_DAYS
from spaces.roles import ADMIN
from tests.chargeflows.dashboard_data import default_levels, issue_row
from tests.factories import PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

CS = ChargeFlowCase.State
LS = ChargeFlowLevel.State
Step = ChargeFlowLevel.Step
QUEUE_URL = reverse("admin:chargeflows_chargeflowcase_changelist") + "?queue=attention"


@pytest.fixture
def space():
    return SpaceFactory(name="Queue", slug="queue")


@pytest.fixture
def card(space):
    return PaymentCardFactory(customer__space=space)


@pytest.fixture
def boss(space):
    return StaffUserFactory(username="boss", role=ADMIN, spaces=[space])


def _case(card, *, state=CS.RUNNING, finished_days_ago=None, email="e@x.test"):
    issue = issue_row(card)
    issue.save()
    flow, _ = default_levels(card.space)
    case = ChargeFlowCase.objects.create(
        space_id=card.space_id, issue=issue, flow=flow, state=state, recipient_email=email
    )
    if finished_days_ago is not None:
        ChargeFlowCase.objects.filter(pk=case.pk).update(
            finished_at=timezone.now() - timedelta(days=finished_days_ago)
        )
    return case


def _waiting_level(case, *, link=None):
    """The case's pending level, done with its steps and waiting; `link`: None for no payment
    link, else "open", "used", "retired" or "expired"."""
    now = timezone.now()
    _, configurations = default_levels(case.space)
    level = ChargeFlowLevel.objects.create(
        case=case,
        configuration=configurations[-1],
        position=1,
        state=LS.PENDING,
        step=Step.WAITING,
        started_at=now - timedelta(days=1),
        times_out_at=now + timedelta(days=13),
        due_at=now + timedelta(days=13),
    )
    if link is not None:
        ChargeFlowLevelPaymentLink.objects.create(
            level=level,
            sent_at=now - timedelta(days=1),
            expires_at=now - timedelta(minutes=1) if link == "expired" else level.times_out_at,
            used_at=now if link == "used" else None,
            retired_at=now if link == "retired" else None,
        )
    return level


def _home_queue(client):
    home = client.get(reverse("admin:index"))
    sections = {s["queue"].key: s for s in home.context["work_queue"]}
    return sections.get("collections")


def test_the_queue_holds_open_links_and_recent_failures_only(client, space, card, boss):
    on_link = _case(card)
    _waiting_level(on_link, link="open")
    recent_failure = _case(card, state=CS.FAILED, finished_days_ago=3)
    # Not for a person: waiting for the period to end before the next try, a link already
    # paid, retired or expired, an old failure, a finished collection.
    for link in (None, "used", "retired", "expired"):
        _waiting_level(_case(card), link=link)
    _case(card, state=CS.FAILED, finished_days_ago=FAILED_CASE_ATTENTION_DAYS + 1)
    _case(card, state=CS.SUCCEEDED, finished_days_ago=1)
    client.force_login(boss)

    queue = _home_queue(client)
    listed = client.get(QUEUE_URL)

    assert queue["count"] == 2
    assert {case.pk for case in queue["rows"]} == {on_link.pk, recent_failure.pk}
    assert listed.status_code == 200
    assert {case.pk for case in listed.context["cl"].result_list} == {
        on_link.pk,
        recent_failure.pk,
    }


def test_another_spaces_collections_are_not_on_the_queue(client, space, card, boss):
    other = SpaceFactory(name="Other", slug="other")
    foreign = _case(PaymentCardFactory(customer__space=other))
    _waiting_level(foreign, link="open")
    _case(PaymentCardFactory(customer__space=other), state=CS.FAILED, finished_days_ago=1)
    mine = _case(card, state=CS.FAILED, finished_days_ago=1)
    client.force_login(boss)

    queue = _home_queue(client)
    listed = client.get(QUEUE_URL)

    assert queue["count"] == 1 and [case.pk for case in queue["rows"]] == [mine.pk]
    assert [case.pk for case in listed.context["cl"].result_list] == [mine.pk]


def test_the_count_costs_the_same_queries_for_few_and_many_collections(client, space, card, boss):
    def add(n):
        for _ in range(n):
            _waiting_level(_case(card), link="open")
            _case(card, state=CS.FAILED, finished_days_ago=2)

    add(1)
    client.force_login(boss)
    client.get(reverse("admin:index"))  # warm caches out of the count
    with CaptureQueriesContext(connection) as few:
        small = _home_queue(client)
    add(9)
    with CaptureQueriesContext(connection) as many:
        large = _home_queue(client)

    assert (small["count"], large["count"]) == (2, 20)
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


def test_the_search_finds_a_collection_by_recipient_email_in_any_case_and_by_reference(
    client, space, card, boss
):
    by_email = _case(card, email="Kim.Tanaka@example.test")
    by_reference = _case(card)
    by_reference.issue.external_reference = "ORD-4711"
    by_reference.issue.save(update_fields=["external_reference"])
    _case(card, email="someone@example.test")
    client.force_login(boss)
    url = reverse("admin:chargeflows_chargeflowcase_changelist")

    found_email = client.get(url, {"q": "kim.tanaka@EXAMPLE.test"})
    found_reference = client.get(url, {"q": "ORD-4711"})

    assert [c.pk for c in found_email.context["cl"].result_list] == [by_email.pk]
    assert [c.pk for c in found_reference.context["cl"].result_list] == [by_reference.pk]


def test_a_word_naming_more_issues_than_the_lookup_holds_still_finds_every_collection(
    client, space, card, boss, monkeypatch
):
    # A common first name: more issues than the selector looks up by id first (lowered to 2
    # here), so the search asks the issues as a subquery instead, with the same answer.
    monkeypatch.setattr("chargeflows.selectors.CASE_SEARCH_ISSUE_LIMIT", 2)
    cases = [_case(card) for _ in range(3)]  # issue_row names every customer Erika Mustermann
    client.force_login(boss)
    url = reverse("admin:chargeflows_chargeflowcase_changelist")

    found = client.get(url, {"q": "erika"})
    narrowed = client.get(url, {"q": f"erika {cases[1].issue_id}"})

    assert {c.pk for c in found.context["cl"].result_list} == {c.pk for c in cases}
    assert [c.pk for c in narrowed.context["cl"].result_list] == [cases[1].pk]
