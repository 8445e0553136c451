"""A staff action that committed is never reported as an error because the broker was down when
its task was sent: the page shows the action's own success, the change is in the database, the
failed dispatch is logged with the task and ids, and the beat sweeper sends the work afterwards.

Real parts throughout: the admin through the test client, PostgreSQL with real commits
(transactional tests), the project's Celery app publishing to a closed port (the broker down)
and then to a Redis database of the test's own, where the sweeper's message is counted.
"""

import logging

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from billing import refunds, services
from billing.models import ChargeIssue, Refund
from tests.broker import app_broker, closed_port_url, queued
from tests.payments.test_real_broker import broker  # noqa: F401 - a Redis database of our own

pytestmark = pytest.mark.django_db(transaction=True)


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _dispatch_failures(caplog, task: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and f"dispatch of {task}" in r.getMessage()
    ]


@pytest.fixture
def entered_issue(space, clerk, register_card):
    registration = register_card(space)
    issue = ChargeIssue.objects.get(customer=registration.customer)
    services.charge_amount_enter(
        issue=issue,
        acting_user=clerk,
        amount="49.90",
        currency="EUR",
        notification_subject="Your order",
        notification_body="We will charge your card.",
    )
    return issue


def test_an_approval_while_the_broker_is_down_succeeds_and_the_beat_sends_the_charge(
    client,
    approver,
    entered_issue,
    broker,  # noqa: F811
    caplog,
):
    url, redis_client, _ = broker
    client.force_login(approver)
    step = reverse("admin:billing_chargeissue_approval", args=[entered_issue.pk])

    with caplog.at_level(logging.ERROR), app_broker(closed_port_url()):
        response = client.post(step, {"decision": "approve"})

    assert response.status_code == 302
    assert response.url == reverse("admin:billing_chargeissue_change", args=[entered_issue.pk])
    assert _messages(response) == [f"Charge #{entered_issue.pk} was approved."]
    entered_issue.refresh_from_db()
    assert entered_issue.state == ChargeIssue.State.APPROVED
    assert entered_issue.approved_by == approver
    (line,) = _dispatch_failures(caplog, "billing.charge_issue_charge")
    assert f"({entered_issue.pk},)" in line and "broker is unavailable" in line
    assert entered_issue.queued_at is None  # nothing waits on the broker for it

    # The broker is back: the next beat sends the charge, once.
    with app_broker(url):
        assert services.charge_issues_due_dispatch() == 1
        assert services.charge_issues_due_dispatch() == 0
    assert queued(redis_client) == {("billing.charge_issue_charge", f"({entered_issue.pk},)"): 1}


def test_a_refund_approval_while_the_broker_is_down_succeeds_and_the_beat_sends_the_refund(
    client,
    clerk,
    approver,
    entered_issue,
    broker,  # noqa: F811
    caplog,
):
    url, redis_client, _ = broker
    services.charge_issue_approve(issue=entered_issue, acting_user=approver)  # charged inline
    entered_issue.refresh_from_db()
    assert entered_issue.state == ChargeIssue.State.SUCCEEDED
    refund = refunds.refund_request(
        issue=entered_issue, acting_user=clerk, amount="12.50", reason="Late delivery"
    )
    assert refund.state == Refund.State.AWAITING_APPROVAL
    client.force_login(approver)
    step = reverse("admin:billing_chargeissue_refund_approval", args=[entered_issue.pk, refund.pk])

    with caplog.at_level(logging.ERROR), app_broker(closed_port_url()):
        response = client.post(step, {"decision": "approve", "comment": ""})

    assert response.status_code == 302
    assert _messages(response) == [f"Refund #{refund.pk} was approved and is being made."]
    refund.refresh_from_db()
    assert (refund.state, refund.approved_by) == (Refund.State.APPROVED, approver)
    (line,) = _dispatch_failures(caplog, "billing.refund_execute")
    assert f"({refund.pk},)" in line

    with app_broker(url):
        assert refunds.refunds_due_dispatch() == 1
        assert refunds.refunds_due_dispatch() == 0
    assert queued(redis_client) == {("billing.refund_execute", f"({refund.pk},)"): 1}
