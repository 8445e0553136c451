"""Workers stopped for ten minutes: the beats that re-send due work (charges, refunds, charge-flow
levels, outbound events, provider events) leave at most one message per due item on the broker.

Every beat task body runs once a minute on a moving clock (time-machine) with no worker, and
publishes for real to a Redis database of this test's own (tests.payments.test_real_broker's
`broker`), whose queue is then counted. The due rows are made through the services against
PostgreSQL and localstripe.
"""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from billing import refunds
from billing import services as billing_services
from billing.models import ChargeIssue, Refund
from chargeflows import services as flow_services
from chargeflows.models import ChargeFlowCase, ChargeFlowLevel
from payments import outbox, webhooks
from tests.broker import app_broker, queued
from tests.chargeflows.conftest import (  # noqa: F401 - shared fixtures
    DECLINES,
    VISA,
    approved_issue,
    approver,
    clerk,
    real_card,
    real_customer,
    space,
)
from tests.payments.test_real_broker import broker  # noqa: F401 - a Redis database of our own

pytestmark = pytest.mark.django_db

BEATS = (
    billing_services.charge_issues_due_dispatch,
    refunds.refunds_due_dispatch,
    flow_services.flow_levels_due_dispatch,
    outbox.outbound_events_sweep,
    webhooks.provider_events_retry,
)


def test_ten_minutes_of_beats_without_workers_queue_one_message_per_due_item(
    space,  # noqa: F811
    clerk,  # noqa: F811
    approver,  # noqa: F811
    broker,  # noqa: F811
    localstripe,
    django_capture_on_commit_callbacks,
):
    url, redis_client, _ = broker
    space.webhook_url = "https://hooks.example.test/backoffice"
    space.save(update_fields=["webhook_url"])
    # Two approved issues whose date has come.
    due_issues = []
    for n in range(2):
        customer = real_customer(space, email=f"due{n}@example.test")
        due_issues.append(approved_issue(customer, real_card(customer, VISA), clerk, approver))
    ChargeIssue.objects.filter(pk__in=[i.pk for i in due_issues]).update(charge_date=timezone.now())
    # A charge made (inline), with a refund waiting for its approver.
    customer = real_customer(space, email="paid@example.test")
    paid = approved_issue(customer, real_card(customer, VISA), clerk, approver)
    with django_capture_on_commit_callbacks(execute=True):
        ChargeIssue.objects.filter(pk=paid.pk).update(charge_date=None)
        billing_services.charge_issue_charge(issue_id=paid.pk)
    paid.refresh_from_db()
    assert paid.state == ChargeIssue.State.SUCCEEDED
    refund = refunds.refund_request(issue=paid, acting_user=clerk, amount="1.00", reason="Late")
    # A collection whose level waits, made due now.
    customer = real_customer(space, email="collect@example.test")
    collected = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    with django_capture_on_commit_callbacks(execute=True):
        billing_services.charge_issue_send_to_collection(issue=collected, acting_user=approver)
    level = ChargeFlowLevel.objects.get(case=ChargeFlowCase.objects.get(issue=collected))
    ChargeFlowLevel.objects.filter(pk=level.pk).update(
        due_at=timezone.now() - timedelta(minutes=1), claimed_until=None
    )
    redis_client.delete("celery")

    start = timezone.now()
    with app_broker(url):
        # What staff and the outside world do while the workers are stopped: each of these
        # sends its own message on commit.
        with django_capture_on_commit_callbacks(execute=True):
            refunds.refund_approve(refund=refund, acting_user=approver)
        with django_capture_on_commit_callbacks(execute=True):
            event = outbox.outbound_event_create(space=space, type="test.ping", payload={})
            outbox.outbound_events_dispatch(ids=[event.pk])
        with django_capture_on_commit_callbacks(execute=True):
            webhooks.provider_event_receive(
                event={"id": "evt_stopped_workers", "type": "customer.updated", "data": {}}
            )
        for minute in range(11):
            with time_machine.travel(start + timedelta(minutes=minute), tick=False):
                for beat in BEATS:
                    beat()

    stored = webhooks.ProviderEvent.objects.get(provider_event_id="evt_stopped_workers")
    on_the_broker = queued(redis_client)
    # A level's run carries its lease too: (level id, lease).
    runs = [
        args
        for (task, args), count in on_the_broker.items()
        for _ in range(count)
        if task == "chargeflows.flow_level_run"
    ]
    assert len(runs) == 1 and runs[0].startswith(f"({level.pk}, "), runs
    assert {
        key: n for key, n in on_the_broker.items() if key[0] != "chargeflows.flow_level_run"
    } == {
        **{("billing.charge_issue_charge", f"({issue.pk},)"): 1 for issue in due_issues},
        ("billing.refund_execute", f"({refund.pk},)"): 1,
        ("payments.outbound_event_deliver", f"('{event.pk}',)"): 1,
        ("payments.provider_event_process", f"({stored.pk},)"): 1,
    }
    assert Refund.objects.get(pk=refund.pk).state == Refund.State.APPROVED  # nothing ran

    # Past the time a message held by a dead worker comes back, a row still untaken is taken
    # for lost and sent again, once.
    later = start + timedelta(minutes=40)
    with app_broker(url), time_machine.travel(later, tick=False):
        assert billing_services.charge_issues_due_dispatch() == 2
        assert billing_services.charge_issues_due_dispatch() == 0
