"""The level beat takes no further batch past its deadline: the rest waits for the next beat
(a minute), so one dispatch never outlasts the broker's visibility timeout.

The deadline is zero and a batch is one level; runs are published for real to a Redis database
of our own (no worker), so the levels' own runs do not happen here."""

import pytest
from django.utils import timezone

from billing import services as billing_services
from chargeflows import services
from chargeflows.models import ChargeFlowLevel
from tests.broker import app_broker, queued
from tests.chargeflows.conftest import DECLINES, approved_issue, real_card, real_customer
from tests.payments.test_real_broker import broker  # noqa: F401 - a Redis database of our own

pytestmark = pytest.mark.django_db


def test_the_level_beat_stops_at_its_deadline_and_the_next_beat_goes_on(
    space,
    clerk,
    approver,
    localstripe,
    settings,
    monkeypatch,
    broker,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    url, redis_client, _ = broker
    for n in range(3):
        customer = real_customer(space, email=f"c{n}@example.test")
        issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
        with django_capture_on_commit_callbacks(execute=True):  # opens the case, runs level 1
            billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)

    assert ChargeFlowLevel.objects.count() == 3
    ChargeFlowLevel.objects.update(due_at=timezone.now(), claimed_until=None)
    settings.TASK_DEADLINE_SECONDS = 0
    monkeypatch.setattr(services, "CLAIM_BATCH", 1)

    with app_broker(url):
        assert services.flow_levels_due_dispatch() == 1
        assert ChargeFlowLevel.objects.filter(claimed_until__isnull=True).count() == 2
        assert services.flow_levels_due_dispatch() == 1
        assert services.flow_levels_due_dispatch() == 1
        assert services.flow_levels_due_dispatch() == 0
    runs = queued(redis_client)
    assert sum(runs.values()) == 3 and {task for task, _ in runs} == {"chargeflows.flow_level_run"}
