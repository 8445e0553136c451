"""Charge flows in the admin: optimistic locking between two admins, the case page with its
timeline and preview, and the staff actions through their services."""

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from billing import services as billing_services
from billing.models import ChargeIssue
from chargeflows.models import (
    ChargeFlow,
    ChargeFlowCase,
    ChargeFlowCaseEvent,
    ChargeFlowLevelConfiguration,
)
from spaces.roles import ADMIN
from tests.chargeflows.conftest import DECLINES, approved_issue, real_card, real_customer
from tests.factories import StaffUserFactory

pytestmark = pytest.mark.django_db


def _flow_post(flow, version, **changes):
    data = {
        "name": flow.name,
        "priority": flow.priority,
        "planned_purge_date_0": "",
        "planned_purge_date_1": "",
        "version_read": version,
        "conditions-TOTAL_FORMS": "0",
        "conditions-INITIAL_FORMS": "0",
        "levels-TOTAL_FORMS": str(flow.levels.count()),
        "levels-INITIAL_FORMS": str(flow.levels.count()),
        **changes,
    }
    for index, level in enumerate(flow.levels.order_by("priority", "pk")):
        data[f"levels-{index}-id"] = level.pk
        data[f"levels-{index}-flow"] = flow.pk
    return data


def test_two_admins_editing_a_flow_the_second_save_is_refused_naming_the_first(space, flow_admin):
    other = StaffUserFactory(username="admin2", role=ADMIN, spaces=[space])
    flow = ChargeFlow.objects.get(space=space)
    url = reverse("admin:chargeflows_chargeflow_change", args=[flow.pk])
    first, second = Client(), Client()
    first.force_login(other)
    second.force_login(flow_admin)
    # Both open the page and read version 1.
    assert first.get(url).status_code == second.get(url).status_code == 200

    saved = first.post(url, _flow_post(flow, 1, name="Renamed by admin2"))
    assert saved.status_code == 302
    stale = second.post(url, _flow_post(flow, 1, priority=7))

    assert stale.status_code == 200  # the form again, with the refusal
    assert "admin2 changed this at" in stale.content.decode()
    flow.refresh_from_db()
    assert (flow.name, flow.priority, flow.version) == ("Renamed by admin2", 1000, 2)
    assert flow.updated_by == other
    assert ChargeFlowCaseEvent.objects.filter(flow=flow, action="flow_changed").count() == 1


def _conditions_post(flow, version, conditions, existing=()):
    """The flow page as posted: its fields unchanged, `existing` condition rows kept as they
    were, and `conditions` as new rows."""
    data = _flow_post(flow, version)
    rows = [*[(c.pk, c.kind, c.min_amount_minor, c.max_amount_minor, c.value) for c in existing]]
    rows += [(None, *row) for row in conditions]
    data["conditions-TOTAL_FORMS"] = str(len(rows))
    data["conditions-INITIAL_FORMS"] = str(len(existing))
    for index, (pk, kind, low, high, value) in enumerate(rows):
        data[f"conditions-{index}-id"] = pk or ""
        data[f"conditions-{index}-flow"] = flow.pk
        data[f"conditions-{index}-kind"] = kind
        data[f"conditions-{index}-min_amount_minor"] = "" if low is None else low
        data[f"conditions-{index}-max_amount_minor"] = "" if high is None else high
        data[f"conditions-{index}-value"] = value
    return data


def test_two_admins_editing_conditions_the_stale_save_is_refused_and_the_edit_audited(
    space, flow_admin
):
    other = StaffUserFactory(username="admin2", role=ADMIN, spaces=[space])
    flow = ChargeFlow.objects.get(space=space)
    url = reverse("admin:chargeflows_chargeflow_change", args=[flow.pk])
    first, second = Client(), Client()
    first.force_login(other)
    second.force_login(flow_admin)
    assert first.get(url).status_code == second.get(url).status_code == 200

    saved = first.post(url, _conditions_post(flow, 1, [("currency", None, None, "EUR")]))
    assert saved.status_code == 302
    stale = second.post(url, _conditions_post(flow, 1, [("currency", None, None, "CHF")]))

    assert stale.status_code == 200
    assert "admin2 changed this at" in stale.content.decode()
    flow.refresh_from_db()
    assert flow.version == 2 and flow.updated_by == other
    assert [(c.kind, c.value) for c in flow.conditions.all()] == [("currency", "EUR")]
    event = ChargeFlowCaseEvent.objects.get(flow=flow, action="conditions_changed")
    assert (event.actor, event.detail) == (other, {"before": [], "after": ["currency = EUR"]})
    # Only the conditions changed: the flow's own fields are not recorded as an edit.
    assert not ChargeFlowCaseEvent.objects.filter(flow=flow, action="flow_changed").exists()

    # The second admin reloads (version 2), changes the currency's value and adds a range.
    existing = list(flow.conditions.all())
    data = _conditions_post(flow, 2, [("amount_range", 500, None, "")], existing=existing)
    data["conditions-0-value"] = "CHF"
    assert second.post(url, data).status_code == 302
    flow.refresh_from_db()
    assert flow.version == 3 and flow.updated_by == flow_admin
    assert sorted(str(c) for c in flow.conditions.all()) == [
        "amount in [500, None]",
        "currency = CHF",
    ]
    assert ChargeFlowCaseEvent.objects.filter(flow=flow, action="conditions_changed").count() == 2

    # Deleting the range is an edit too; a range with no bound is refused and changes nothing.
    existing = list(flow.conditions.order_by("pk"))
    data = _conditions_post(flow, 3, [], existing=existing)
    data["conditions-1-DELETE"] = "on"
    assert second.post(url, data).status_code == 302
    flow.refresh_from_db()
    assert (flow.version, [str(c) for c in flow.conditions.all()]) == (4, ["currency = CHF"])
    bad = second.post(url, _conditions_post(flow, 4, [("amount_range", None, None, "")]))
    assert bad.status_code == 200
    flow.refresh_from_db()
    assert (flow.version, flow.conditions.count()) == (4, 1)


def test_a_level_is_edited_with_an_iso_8601_period_and_its_own_version(space, flow_admin, client):
    client.force_login(flow_admin)
    level = ChargeFlowLevelConfiguration.objects.filter(flow__space=space).first()
    url = reverse("admin:chargeflows_chargeflowlevelconfiguration_change", args=[level.pk])
    data = {
        "flow": level.flow_id,
        "name": "Retry soon",
        "priority": level.priority,
        "period": "P2DT12H",
        "run_token_charge": "on",
        "notify_customer": "on",
        "link_delivery": "email",
        "email_texts": "{}",
        "state": "active",
        "version_read": level.version,
    }
    assert client.post(url, data).status_code == 302
    level.refresh_from_db()
    assert (level.name, level.period.total_seconds(), level.version) == ("Retry soon", 216000, 2)
    # The same stale copy again is refused.
    response = client.post(url, {**data, "name": "Again"})
    assert response.status_code == 200 and "admin1 changed this at" in response.content.decode()
    bad = client.post(url, {**data, "period": "three days", "version_read": 2})
    assert bad.status_code == 200 and "period" in bad.context["adminform"].form.errors


def test_flow_state_actions_go_through_the_state_machine(space, flow_admin, client):
    client.force_login(flow_admin)
    flow = ChargeFlow.objects.get(space=space)
    changelist = reverse("admin:chargeflows_chargeflow_changelist")
    client.post(changelist, {"action": "deactivate", "_selected_action": [flow.pk]})
    flow.refresh_from_db()
    assert flow.state == ChargeFlow.State.INACTIVE
    client.post(changelist, {"action": "activate", "_selected_action": [flow.pk]})
    flow.refresh_from_db()
    assert (flow.state, flow.version) == (ChargeFlow.State.ACTIVE, 3)


@pytest.fixture
def running_case(space, clerk, approver, localstripe, django_capture_on_commit_callbacks):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    with django_capture_on_commit_callbacks(execute=True):
        billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    return ChargeFlowCase.objects.get(issue=issue)


def test_the_case_page_shows_the_timeline_and_the_coming_levels(running_case, clerk, client):
    client.force_login(clerk)
    page = client.get(reverse("admin:chargeflows_chargeflowcase_change", args=[running_case.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="level-row"') == 1 and html.count('class="preview-row"') == 2
    assert "Payment link (valid 14 days)" in html and "card_declined" in html


def test_case_actions_are_audited_services(
    running_case, clerk, client, django_capture_on_commit_callbacks
):
    client.force_login(clerk)

    def act(name, **data):
        url = reverse(f"admin:chargeflows_chargeflowcase_{name}", args=[running_case.pk])
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(url, data)

    assert act("recipient", email="not an email").status_code == 302
    running_case.refresh_from_db()
    assert running_case.recipient_email != "not an email"
    act("recipient", email="accounts@example.test")
    act("next_level")
    act("next_level")  # now at the payment link level
    shown = act("copy_link")
    assert shown.status_code == 200 and "/pay/" in shown.content.decode()
    response = act("cancel")
    assert [str(m) for m in get_messages(response.wsgi_request)][-1].startswith("Collection")

    running_case.refresh_from_db()
    assert running_case.state == ChargeFlowCase.State.CANCELLED
    assert running_case.recipient_email == "accounts@example.test"
    assert running_case.issue.state == ChargeIssue.State.CANCELLED
    actions = list(running_case.events.exclude(actor=None).values_list("action", flat=True))
    assert actions == [
        "recipient_changed",
        "next_level_now",
        "next_level_now",
        "link_copied",
        "cancelled",
    ]
    assert (
        client.get(
            reverse("admin:chargeflows_chargeflowcase_cancel", args=[running_case.pk])
        ).status_code
        == 405
    )


def test_an_approver_sends_an_approved_charge_to_collection_from_the_issue_page(
    space, clerk, approver, client, localstripe, django_capture_on_commit_callbacks
):
    from tests.chargeflows.conftest import VISA

    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, VISA), clerk, approver)
    url = reverse("admin:billing_chargeissue_send_to_collection", args=[issue.pk])
    client.force_login(clerk)
    assert client.post(url).status_code == 403  # a clerk may not
    client.force_login(approver)
    page = client.get(reverse("admin:billing_chargeissue_change", args=[issue.pk]))
    assert "step-send_to_collection" in page.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url).status_code == 302

    issue.refresh_from_db()
    assert issue.state == ChargeIssue.State.SUCCEEDED  # the first level's card charge
    sent = issue.events.get(action="sent_to_collection")
    assert (sent.actor, sent.from_state, sent.to_state) == (approver, "approved", "collecting")


def test_a_collecting_charge_is_cancelled_only_with_its_collection(running_case, approver):
    from billing.exceptions import IllegalTransition

    with pytest.raises(IllegalTransition):
        billing_services.charge_issue_cancel(issue=running_case.issue, acting_user=approver)
    running_case.issue.refresh_from_db()
    assert running_case.issue.state == ChargeIssue.State.COLLECTING
