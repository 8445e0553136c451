"""Refunds through the charge's admin pages (request, approval), driven by the test client."""

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.core import mail
from django.urls import reverse

from billing import services
from billing.models import ChargeIssue, Refund
from spaces.roles import APPROVER
from tests.factories import StaffUserFactory

pytestmark = pytest.mark.django_db
State = Refund.State


def change_url(issue):
    return reverse("admin:billing_chargeissue_change", args=[issue.pk])


def refund_url(issue):
    return reverse("admin:billing_chargeissue_refund", args=[issue.pk])


def approval_url(refund):
    return reverse("admin:billing_chargeissue_refund_approval", args=[refund.issue_id, refund.pk])


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def succeeded_issue(space, clerk, approver, register_card, django_capture_on_commit_callbacks):
    register_card(space, email="kim@example.test")
    issue = ChargeIssue.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        services.charge_amount_enter(
            issue=issue,
            acting_user=clerk,
            amount="49.90",
            currency="EUR",
            notification_subject="Order 7",
            notification_body="We will charge your card.",
        )
        services.charge_issue_approve(issue=issue, acting_user=approver)
    issue.refresh_from_db()
    assert issue.state == ChargeIssue.State.SUCCEEDED
    mail.outbox.clear()
    return issue


def test_a_clerk_requests_and_an_approver_approves_a_refund_in_the_admin(
    client, clerk, approver, succeeded_issue, localstripe, django_capture_on_commit_callbacks
):
    client.force_login(clerk)
    page = client.get(change_url(succeeded_issue))
    assert page.status_code == 200
    assert 'id="step-refund"' in page.content.decode()

    form = client.get(refund_url(succeeded_issue))
    assert form.status_code == 200 and "49.90 EUR" in form.content.decode()
    response = client.post(refund_url(succeeded_issue), {"amount": "12.50", "reason": "Late"})

    assert response.status_code == 302 and response.url == change_url(succeeded_issue)
    refund = Refund.objects.get()
    assert (refund.state, refund.amount_minor, refund.requested_by) == (
        State.AWAITING_APPROVAL,
        1250,
        clerk,
    )
    assert "waits for an approver" in messages_of(response)[0]
    # The clerk is offered no decision on it.
    assert (
        f'id="refund-approval-{refund.pk}"'
        not in client.get(change_url(succeeded_issue)).content.decode()
    )

    client.force_login(approver)
    page = client.get(change_url(succeeded_issue)).content.decode()
    assert f'id="refund-approval-{refund.pk}"' in page
    decision = client.get(approval_url(refund))
    assert decision.status_code == 200 and "Late" in decision.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(approval_url(refund), {"decision": "approve", "comment": ""})

    assert response.status_code == 302
    refund.refresh_from_db()
    succeeded_issue.refresh_from_db()
    assert refund.state == State.SUCCEEDED and refund.approved_by == approver
    assert succeeded_issue.refunded_minor == 1250
    assert [m.subject for m in mail.outbox] == ["Shop: refund of €12.50"]
    page = client.get(change_url(succeeded_issue)).content.decode()
    assert "12.50 EUR (partially)" in page and "Refunded" in page


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"amount": "abc", "reason": "Late"}, "amount"),
        ({"amount": "", "reason": "Late"}, "amount"),
        ({"amount": "10.00", "reason": ""}, "reason"),
        ({"amount": "50.00", "reason": "Too much"}, "amount"),
    ],
)
def test_bad_refund_input_is_a_form_error_and_changes_nothing(
    client, clerk, succeeded_issue, data, field
):
    client.force_login(clerk)

    response = client.post(refund_url(succeeded_issue), data)

    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert Refund.objects.count() == 0


def test_a_clerk_cannot_approve_and_the_try_is_audited(client, clerk, succeeded_issue):
    client.force_login(clerk)
    client.post(refund_url(succeeded_issue), {"amount": "5.00", "reason": "Late"})
    refund = Refund.objects.get()

    response = client.post(approval_url(refund), {"decision": "approve"})

    assert response.status_code == 403
    refund.refresh_from_db()
    assert refund.state == State.AWAITING_APPROVAL
    refusal = refund.events.get(action="approval_refused")
    assert (refusal.actor, refusal.detail["reason"]) == (clerk, "wrong_role")


def test_the_requester_with_both_roles_is_refused_in_the_admin_and_audited(
    client, space, succeeded_issue
):
    both = StaffUserFactory(username="both1", role="clerk", spaces=[space])
    both.groups.add(Group.objects.get(name=APPROVER))
    client.force_login(both)
    client.post(refund_url(succeeded_issue), {"amount": "5.00", "reason": "Late"})
    refund = Refund.objects.get()

    response = client.post(approval_url(refund), {"decision": "approve"})

    assert response.status_code == 302
    assert any("someone else must approve it" in m for m in messages_of(response))
    refund.refresh_from_db()
    assert refund.state == State.AWAITING_APPROVAL
    assert refund.events.get(action="approval_refused").detail["reason"] == "refund_self_approval"


def test_an_approver_rejects_with_a_reason(client, clerk, approver, succeeded_issue, localstripe):
    client.force_login(clerk)
    client.post(refund_url(succeeded_issue), {"amount": "5.00", "reason": "Late"})
    refund = Refund.objects.get()
    client.force_login(approver)

    missing = client.post(approval_url(refund), {"decision": "reject", "comment": ""})
    response = client.post(approval_url(refund), {"decision": "reject", "comment": "No"})

    assert missing.status_code == 200 and missing.context["form"].errors["comment"]
    assert response.status_code == 302
    refund.refresh_from_db()
    assert refund.state == State.REJECTED
    # Decided: the page says so instead of offering the decision again.
    again = client.get(approval_url(refund))
    assert again.status_code == 302


def test_another_spaces_refund_is_not_found(client, succeeded_issue, clerk):
    from tests.factories import SpaceFactory

    client.force_login(clerk)
    client.post(refund_url(succeeded_issue), {"amount": "5.00", "reason": "Late"})
    refund = Refund.objects.get()
    stranger = StaffUserFactory(role=APPROVER, spaces=[SpaceFactory()])
    client.force_login(stranger)

    assert client.get(approval_url(refund)).status_code == 404
    assert client.get(refund_url(succeeded_issue)).status_code == 404
    assert client.get(reverse("admin:billing_refund_changelist")).context["cl"].result_count == 0


def test_the_refund_list_and_page_show_the_history(client, clerk, approver, succeeded_issue):
    client.force_login(clerk)
    client.post(refund_url(succeeded_issue), {"amount": "5.00", "reason": "Late"})
    refund = Refund.objects.get()
    client.force_login(approver)

    listing = client.get(reverse("admin:billing_refund_changelist"))
    page = client.get(reverse("admin:billing_refund_change", args=[refund.pk]))

    assert listing.status_code == 200 and listing.context["cl"].result_count == 1
    assert page.status_code == 200
    body = page.content.decode()
    assert "approval_required" in body and "clerk1" in body


def test_a_refund_is_no_longer_offered_once_all_of_the_charge_is_held(
    client, clerk, succeeded_issue
):
    client.force_login(clerk)
    client.post(refund_url(succeeded_issue), {"amount": "40.00", "reason": "Damaged"})
    # 9.90 EUR left: still offered.
    assert 'id="step-refund"' in client.get(change_url(succeeded_issue)).content.decode()

    client.post(refund_url(succeeded_issue), {"amount": "9.90", "reason": "The rest"})

    # The whole charge is held by open refunds: the step is gone from the page.
    assert Refund.objects.count() == 2
    assert 'id="step-refund"' not in client.get(change_url(succeeded_issue)).content.decode()
