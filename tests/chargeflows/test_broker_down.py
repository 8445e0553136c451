""" "Start the next level now" while the broker is down: the staff member is told the next level
started (it did: committed), the failed dispatch of its run is logged with the level's id, and
the level is not left waiting out its lease: the next beat sends its run.

Real parts: the admin through the test client, PostgreSQL with real commits, localstripe, the
project's Celery app publishing to a closed port and then to a Redis database of our own.
"""

import logging

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from billing import services as billing_services
from chargeflows import services
from chargeflows.models import ChargeFlowCase, ChargeFlowLevel
from tests.broker import app_broker, closed_port_url, queued
from tests.chargeflows.conftest import DECLINES, approved_issue, real_card, real_customer
from tests.payments.test_real_broker import broker  # noqa: F401 - a Redis database of our own

pytestmark = pytest.mark.django_db(transaction=True)


def test_next_level_now_while_the_broker_is_down_starts_it_and_the_beat_sends_its_run(
    space,
    clerk,
    approver,
    client,
    localstripe,
    broker,  # noqa: F811
    caplog,
):
    url, redis_client, _ = broker
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    case = ChargeFlowCase.objects.get(issue=issue)
    assert case.levels.count() == 1  # its first level ran (the card declined) and waits
    client.force_login(clerk)

    with caplog.at_level(logging.ERROR), app_broker(closed_port_url()):
        response = client.post(
            reverse("admin:chargeflows_chargeflowcase_next_level", args=[case.pk])
        )

    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["The next level has started."]
    second = case.levels.get(position=2)
    assert second.state == ChargeFlowLevel.State.PENDING
    assert case.events.filter(action="next_level_now", actor=clerk).count() == 1
    failures = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and "dispatch of chargeflows.flow_level_run" in r.getMessage()
    ]
    assert len(failures) == 1 and f"({second.pk}, " in failures[0]
    # Its lease was given back: due now, the beat may claim it at once.
    assert second.claimed_until is None and second.queued_at is None

    with app_broker(url):
        assert services.flow_levels_due_dispatch() == 1
        assert services.flow_levels_due_dispatch() == 0
    ((task, args), count), *others = queued(redis_client).items()
    assert (task, count, others) == ("chargeflows.flow_level_run", 1, [])
    assert args.startswith(f"({second.pk}, ")
