"""Two beats by mistake never charge twice.

Production runs exactly one beat (Procfile), but a second one started by mistake (a deploy that
overlaps, a second machine with the wrong role) runs every scheduled dispatch twice. The due
charges' dispatch (billing.charge_issues_due_dispatch) only sends charge tasks, each issue once
between the two (it marks what it sends); the charge itself (payments.attempts) is exactly-once
in the database, whatever is delivered twice. Counted at localstripe: one
PaymentIntent per issue.
"""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from billing import services, tasks
from billing.models import ChargeIssue
from payments.models import ChargeAttempt
from tests.billing.conftest import payment_intents_for

ISSUES = 4


def _approved_issues(space, clerk, approver, register_card) -> list[ChargeIssue]:
    for n in range(ISSUES):
        register_card(space, name=f"Customer {n}", email=f"c{n}@example.test")
    issues = list(ChargeIssue.objects.order_by("pk"))
    for issue in issues:
        services.charge_amount_enter(
            issue=issue,
            acting_user=clerk,
            amount="12.34",
            currency="EUR",
            notification_subject="Your order",
            notification_body="We charge your card.",
            charge_date=timezone.now() + timedelta(days=1),
        )
        services.charge_issue_approve(issue=issue, acting_user=approver)
    # Due now, so the next beat dispatch sends their charges.
    ChargeIssue.objects.update(charge_date=timezone.now())
    return issues


def _in_threads(functions) -> list:
    barrier = threading.Barrier(len(functions))
    results, errors = [None] * len(functions), []

    def run(index, function):
        try:
            barrier.wait()
            results[index] = function()
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


def _charged_once_each(localstripe, issues) -> None:
    for issue in issues:
        issue.refresh_from_db()
        assert issue.state == ChargeIssue.State.SUCCEEDED
        assert len(payment_intents_for(localstripe, issue)) == 1
        assert ChargeAttempt.objects.filter(charge_issue=issue).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_beats_dispatching_every_due_issue_twice_charge_each_once(
    space, clerk, approver, register_card, localstripe, monkeypatch
):
    issues = _approved_issues(space, clerk, approver, register_card)
    # Stands in for the broker (the only substitute here): the two beats' dispatches both run
    # before any worker takes a message, so each sends a charge for every due issue. The
    # database and the provider are real.
    sent: list[int] = []
    monkeypatch.setattr(tasks.charge_issue_charge, "delay", sent.append)

    dispatched = _in_threads([tasks.charge_issues_due_dispatch] * 2)

    # The beats mark what they send (queued_at), so between them each issue is sent once.
    assert sum(dispatched) == ISSUES
    assert sorted(sent) == sorted(issue.pk for issue in issues)

    # Workers still take every message twice (a redelivery) concurrently, two per issue at the
    # same moment.
    charged = _in_threads([lambda pk=pk: tasks.charge_issue_charge(pk) for pk in sent * 2])

    assert charged.count(True) == ISSUES
    _charged_once_each(localstripe, issues)


@pytest.mark.django_db(transaction=True)
def test_two_beats_racing_with_tasks_run_inline_charge_each_once(
    space, clerk, approver, register_card, localstripe
):
    """The whole path as the test settings run it (tasks inline): two beat task bodies at the
    same moment, each dispatching and charging what it found due."""
    issues = _approved_issues(space, clerk, approver, register_card)

    dispatched = _in_threads([tasks.charge_issues_due_dispatch] * 2)

    assert ISSUES <= sum(dispatched) <= 2 * ISSUES
    _charged_once_each(localstripe, issues)
    # A later beat finds nothing due.
    assert tasks.charge_issues_due_dispatch() == 0
