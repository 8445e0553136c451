"""The per-space dashboard: its figures on small known data, a query count that does not grow
with the data (10 against 10,000 rows of every kind), and the admin page's tenancy."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import ChargeIssue
from chargeflows.dashboard import duration_text, space_dashboard
from chargeflows.models import (
    ChargeFlowCase,
    ChargeFlowLevel,
    ChargeFlowLevelPaymentLink,
)
from payments.models import ChargeAttempt, DeliveryAttempt, OutboundEvent, ProviderEvent
from spaces.roles import CLERK
from tests.chargeflows.dashboard_data import (
    Purpose,
    attempt_row,
    default_levels,
    fill_dashboard_data,
    issue_row,
)
from tests.factories import PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

IS = ChargeIssue.State
CS = ChargeFlowCase.State
LS = ChargeFlowLevel.State


def _case(card, flow, *, state, code="", took=None, now):
    issue = issue_row(card, failure_code=code)
    issue.save()
    case = ChargeFlowCase.objects.create(
        space_id=card.space_id, issue=issue, flow=flow, state=state, recipient_email="e@x.test"
    )
    if took is not None:
        # created_at is auto_now_add: set both ends afterwards.
        ChargeFlowCase.objects.filter(pk=case.pk).update(created_at=now - took, finished_at=now)
    return case


def _level(case, configuration, position, state, *, now):
    return ChargeFlowLevel.objects.create(
        case=case,
        configuration=configuration,
        position=position,
        state=state,
        started_at=now - timedelta(days=1),
        times_out_at=now + timedelta(days=1),
        finished_at=None if state == LS.PENDING else now,
    )


@pytest.fixture
def space():
    return SpaceFactory(name="Dash", slug="dash")


@pytest.fixture
def card(space):
    return PaymentCardFactory(customer__space=space)


def test_the_figures_on_known_data(space, card):
    now = timezone.now()
    flow, (l1, l2, l3) = default_levels(space)
    other_card = PaymentCardFactory(customer__space=SpaceFactory(slug="other"))

    # Collections: four recovered (8, 2, 4 and 6 days: median 5 days), one failed, one
    # cancelled (in no rate), two running (at levels 1 and 2), one from another space.
    c1 = _case(
        card, flow, state=CS.SUCCEEDED, code="insufficient_funds", took=timedelta(8), now=now
    )
    c2 = _case(
        card, flow, state=CS.SUCCEEDED, code="insufficient_funds", took=timedelta(2), now=now
    )
    c3 = _case(card, flow, state=CS.SUCCEEDED, code="expired_card", took=timedelta(4), now=now)
    c4 = _case(card, flow, state=CS.FAILED, code="insufficient_funds", took=timedelta(20), now=now)
    c5 = _case(card, flow, state=CS.SUCCEEDED, code="", took=timedelta(6), now=now)
    _case(card, flow, state=CS.CANCELLED, code="expired_card", took=timedelta(1), now=now)
    r1 = _case(card, flow, state=CS.RUNNING, now=now)
    r2 = _case(card, flow, state=CS.RUNNING, now=now)
    other_flow, (other_l1, *_) = default_levels(other_card.space)
    r3 = _case(other_card, other_flow, state=CS.RUNNING, now=now)
    # Levels that ended: level 1 recovered 1 of 6, level 2 1 of 4, level 3 2 of 3.
    _level(c1, l1, 1, LS.FAILED, now=now)
    _level(c1, l2, 2, LS.SUCCESSFUL, now=now)
    _level(c2, l1, 1, LS.SUCCESSFUL, now=now)
    _level(c3, l1, 1, LS.FAILED, now=now)
    _level(c3, l2, 2, LS.FAILED, now=now)
    _level(c3, l3, 3, LS.SUCCESSFUL, now=now)
    for position, configuration in enumerate((l1, l2, l3), start=1):
        _level(c4, configuration, position, LS.FAILED, now=now)
    _level(c5, l1, 1, LS.FAILED, now=now)
    _level(c5, l2, 2, LS.FAILED, now=now)
    link_level = _level(c5, l3, 3, LS.SUCCESSFUL, now=now)
    _level(r1, l1, 1, LS.PENDING, now=now)
    _level(r2, l1, 1, LS.FAILED, now=now)
    _level(r2, l2, 2, LS.PENDING, now=now)
    _level(r3, other_l1, 1, LS.PENDING, now=now)
    link = ChargeFlowLevelPaymentLink.objects.create(level=link_level, expires_at=now)

    # Open issues besides the collecting ones above: 2 awaiting amount, 1 awaiting approval,
    # and finished ones that are not open.
    awaiting = [issue_row(card, IS.AWAITING_AMOUNT, amount=None) for _ in range(2)]
    ChargeIssue.objects.bulk_create(
        [*awaiting, issue_row(card, IS.AWAITING_APPROVAL), issue_row(card, IS.CANCELLED)]
    )
    paid = ChargeIssue.objects.bulk_create([issue_row(card, IS.SUCCEEDED) for _ in range(5)])
    charged_today, charged_before, failed, old, usd = paid
    day = timedelta(days=1)
    ChargeAttempt.objects.bulk_create(
        [
            attempt_row(space, amount=1000, finished_at=now, purpose=Purpose.ISSUE_CHARGE,
                     charge_issue=charged_today),
            attempt_row(space, amount=500, finished_at=now - 2 * day, purpose=Purpose.ISSUE_CHARGE,
                     charge_issue=charged_before),
            attempt_row(space, amount=999, finished_at=now, status="failed",
                     purpose=Purpose.ISSUE_CHARGE, charge_issue=failed),
            attempt_row(space, amount=777, finished_at=now - 40 * day,
                     purpose=Purpose.ISSUE_CHARGE, charge_issue=old),
            attempt_row(space, amount=700, currency="USD", finished_at=now,
                     purpose=Purpose.ISSUE_CHARGE, charge_issue=usd),
            attempt_row(space, amount=300, finished_at=now, purpose=Purpose.FLOW_LEVEL,
                     flow_level=c2.levels.get()),
            attempt_row(space, amount=200, finished_at=now - 5 * day, purpose=Purpose.PAYMENT_LINK,
                     payment_link=link),
            attempt_row(other_card.space, amount=5000, finished_at=now, purpose=Purpose.FLOW_LEVEL,
                     flow_level=r3.levels.get()),
        ]
    )  # fmt: skip

    # Outbound: one given up, one being retried, one delivered; 3 failed tries.
    given_up, retrying, delivered = OutboundEvent.objects.bulk_create(
        [
            OutboundEvent(space=space, type="t", payload={}, url="https://x.test", tries=8,
                          given_up=True),
            OutboundEvent(space=space, type="t", payload={}, url="https://x.test", tries=2),
            OutboundEvent(space=space, type="t", payload={}, url="https://x.test", tries=1,
                          delivered_at=now),
        ]
    )  # fmt: skip
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(event=e, latency_ms=5, error="503")
            for e in (given_up, given_up, retrying)
        ]
        + [DeliveryAttempt(event=delivered, latency_ms=5, succeeded=True, status_code=200)]
    )
    ProviderEvent.objects.bulk_create(
        [
            ProviderEvent(provider_event_id="evt_1", type="t", payload={}, tries=6, given_up=True),
            ProviderEvent(provider_event_id="evt_2", type="t", payload={}, tries=1),
            ProviderEvent(provider_event_id="evt_3", type="t", payload={}, processed_at=now),
        ]
    )

    figures = space_dashboard(space_id=space.pk, include_provider_events=True, now=now)

    assert len(figures.days) == 30 and figures.days[-1] == timezone.localdate(now)
    eur, usd_series = figures.amounts["EUR"], figures.amounts["USD"]
    assert list(figures.amounts) == ["EUR", "USD"]
    assert (eur["charged"][-1], eur["charged"][-3], sum(eur["charged"])) == (1000, 500, 1500)
    assert (eur["recovered"][-1], eur["recovered"][-6], sum(eur["recovered"])) == (300, 200, 500)
    assert (sum(usd_series["charged"]), sum(usd_series["recovered"])) == (700, 0)

    assert figures.open_charges == {
        IS.AWAITING_AMOUNT: 2,
        IS.AWAITING_APPROVAL: 1,
        IS.COLLECTING: 8,  # every case's issue here (this data leaves them "collecting")
    }
    assert [(r["level"], r["position"], r["count"]) for r in figures.collections_by_level] == [
        (l1.name, 1, 1),
        (l2.name, 2, 1),
    ]
    assert [(r["position"], r["recovered"], r["finished"]) for r in figures.recovery_per_level] == [
        (1, 1, 6),
        (2, 1, 4),
        (3, 2, 3),
    ]
    rates = {r["code"]: (r["recovered"], r["finished"]) for r in figures.recovery_per_decline_code}
    assert rates == {"insufficient_funds": (2, 3), "expired_card": (1, 1), "": (1, 1)}
    assert figures.recovery_time_median == timedelta(days=5)
    assert figures.outbound_failures == {"given_up": 1, "retrying": 1}
    assert figures.delivery_failures == 3
    assert figures.provider_event_failures == {"given_up": 1, "retrying": 1}

    staff_figures = space_dashboard(space_id=space.pk, include_provider_events=False, now=now)
    assert staff_figures.provider_event_failures is None


def test_the_median_of_an_odd_number_and_of_none(space, card):
    now = timezone.now()
    flow, _ = default_levels(space)
    assert (
        space_dashboard(space_id=space.pk, include_provider_events=False).recovery_time_median
        is None
    )
    for days in (8, 2, 3):
        _case(card, flow, state=CS.SUCCEEDED, took=timedelta(days=days), now=now)
    # A recovery before the 30 days is not counted.
    old = _case(card, flow, state=CS.SUCCEEDED, took=timedelta(days=1), now=now)
    ChargeFlowCase.objects.filter(pk=old.pk).update(finished_at=now - timedelta(days=31))
    figures = space_dashboard(space_id=space.pk, include_provider_events=False, now=now)
    assert figures.recovery_time_median == timedelta(days=3)
    assert duration_text(figures.recovery_time_median) == "3 d 0 h"


def _queries(function) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as captured:
        result = function()
    return len(captured), result


def test_the_figures_take_the_same_queries_at_10_and_10000_rows(space, card):
    def figures():
        return space_dashboard(space_id=space.pk, include_provider_events=True)

    fill_dashboard_data(space, card, 10)
    small, small_figures = _queries(figures)
    fill_dashboard_data(space, card, 9_990)
    large, large_figures = _queries(figures)

    assert small == large == 10
    # The same queries read the larger data.
    assert (sum(small_figures.open_charges.values()), sum(large_figures.open_charges.values())) == (
        10,
        10_000,
    )
    assert sum(large_figures.amounts["EUR"]["charged"]) == 5_000 * 100
    assert large_figures.delivery_failures == 10_000
    assert large_figures.provider_event_failures["given_up"] == 10_000
    assert large_figures.recovery_per_level[0]["finished"] == 6_666


def test_the_page_takes_the_same_queries_at_10_and_10000_rows(client, space, card):
    user = StaffUserFactory(role=CLERK, spaces=[space])
    client.force_login(user)
    url = reverse("admin:chargeflows_dashboard_space", args=[space.pk])

    fill_dashboard_data(space, card, 10)
    small, response = _queries(lambda: client.get(url))
    assert response.status_code == 200
    assert b'id="open-charges-total">10<' in response.content
    fill_dashboard_data(space, card, 9_990)
    large, response = _queries(lambda: client.get(url))
    assert response.status_code == 200
    assert b'id="open-charges-total">10000<' in response.content
    assert small == large


def test_staff_see_only_their_spaces_dashboards(client, space):
    other = SpaceFactory(name="Elsewhere", slug="elsewhere")
    user = StaffUserFactory(role=CLERK, spaces=[space])
    client.force_login(user)

    own = client.get(reverse("admin:chargeflows_dashboard_space", args=[space.pk]))
    assert own.status_code == 200
    assert b"Dashboard of Dash" in own.content
    assert b'class="chart"' in own.content
    # A clerk is not a superuser: provider webhooks (of every space) are not shown.
    assert b"provider-given-up" not in own.content

    assert (
        client.get(reverse("admin:chargeflows_dashboard_space", args=[other.pk])).status_code == 404
    )
    assert (
        client.get(reverse("admin:chargeflows_dashboard_space", args=[999_999])).status_code == 404
    )

    listing = client.get(reverse("admin:chargeflows_dashboard_changelist"))
    assert listing.status_code == 200
    assert b"Open the dashboard" in listing.content
    assert b"Elsewhere" not in listing.content
    # A space's object URL here leads to its dashboard; another space's is not found.
    change = client.get(reverse("admin:chargeflows_dashboard_change", args=[space.pk]))
    assert change.status_code == 302
    assert change["Location"] == reverse("admin:chargeflows_dashboard_space", args=[space.pk])
    assert (
        client.get(reverse("admin:chargeflows_dashboard_change", args=[other.pk])).status_code
        == 404
    )


def test_superusers_see_provider_webhook_failures(client, space):
    admin_user = StaffUserFactory(username="root", is_superuser=True)
    ProviderEvent.objects.create(provider_event_id="evt_x", type="t", payload={}, given_up=True)
    client.force_login(admin_user)
    response = client.get(reverse("admin:chargeflows_dashboard_space", args=[space.pk]))
    assert b'id="provider-given-up">1<' in response.content


def test_the_dashboard_needs_a_staff_login(client, space):
    url = reverse("admin:chargeflows_dashboard_space", args=[space.pk])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_the_space_page_links_to_its_dashboard(client, space):
    client.force_login(StaffUserFactory(username="root", is_superuser=True))
    response = client.get(reverse("admin:spaces_space_change", args=[space.pk]))
    assert response.status_code == 200
    url = reverse("admin:chargeflows_dashboard_space", args=[space.pk])
    assert f'href="{url}"'.encode() in response.content
