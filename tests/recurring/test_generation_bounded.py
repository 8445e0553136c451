"""A generation run stops at its deadline and sends itself on for the rest, so one run never
outlasts the broker's visibility timeout however many lines fall due on one day.

The deadline is set to zero (each run makes the one line it must, then stops); the run's
follow-up message is published for real to a Redis database of our own and counted there."""

import pytest

from recurring import services
from recurring.models import RecurringLine
from tests.broker import app_broker, queued
from tests.payments.test_real_broker import broker  # noqa: F401 - a Redis database of our own
from tests.recurring.test_tasks import _due

pytestmark = pytest.mark.django_db


def test_a_generation_run_stops_at_its_deadline_and_sends_itself_on(
    seed_customer,
    seed_card,
    make_line,
    settings,
    broker,  # noqa: F811
):
    url, redis_client, _ = broker
    card = seed_card(exp_year=2034)
    lines = [_due(make_line(seed_customer, card=card, amount=1000 + i)) for i in range(3)]
    settings.TASK_DEADLINE_SECONDS = 0

    with app_broker(url):
        assert services.recurring_lines_generate_due() == 1

    generated = RecurringLine.objects.filter(pk__in=[line.pk for line in lines], status="generated")
    assert generated.count() == 1
    assert queued(redis_client) == {("recurring.recurring_lines_generate_due", "()"): 1}

    # The follow-up runs (here inline, as the worker would take it) go on where it stopped.
    redis_client.delete("celery")
    with app_broker(url):
        assert services.recurring_lines_generate_due() == 1
        assert services.recurring_lines_generate_due() == 1
        assert services.recurring_lines_generate_due() == 0
    assert generated.count() == 3
