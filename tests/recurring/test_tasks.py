"""Beat work: missing-card reminders (once, with a registration link), generations (a charging
issue per due line, approved by the space's rule or waiting, exactly one PaymentIntent at
localstripe per charged generation, next generation copying key and card)."""

import pytest
from django.core import mail
from django.utils import timezone

from billing import services as billing_services
from billing.models import ChargeIssue, ChargeIssueEvent
from cards.models import CardEvent, CardInvitation
from recurring import services, tasks
from recurring.models import RecurringEvent, RecurringLine, RecurringSettings
from tests.recurring.conftest import SEED_KEY, soon

pytestmark = pytest.mark.django_db
Status = RecurringLine.Status
State = ChargeIssue.State


# --- Missing-card reminders -------------------------------------------------------------------


def test_a_line_without_a_card_emails_one_reminder_with_a_registration_link(
    seed_customer, make_line, django_capture_on_commit_callbacks, settings
):
    settings.RECURRING_CARD_REMINDER_DAYS = 5
    due_soon = make_line(seed_customer, key=SEED_KEY, charge_date=soon(4))
    make_line(seed_customer, key=SEED_KEY, charge_date=soon(20))  # not yet

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.recurring_card_reminders_send() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.recurring_card_reminders_send() == 0  # once

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    invitation = CardInvitation.objects.get(customer=seed_customer)
    assert message.to == [seed_customer.email] and "/register/" in message.body
    assert "49.90" in message.body and "register a card" in message.subject
    due_soon.refresh_from_db()
    assert due_soon.card_reminder_sent_at is not None
    sent = RecurringEvent.objects.get(action="card_reminder_sent")
    assert sent.line == due_soon and sent.detail["invitation"] == str(invitation.public_id)
    assert CardEvent.objects.filter(kind=CardEvent.Kind.INVITATION_SENT).count() == 1


def test_the_spaces_reminder_days_win_over_the_default(
    space, space_admin, seed_customer, make_line, django_capture_on_commit_callbacks, settings
):
    settings.RECURRING_CARD_REMINDER_DAYS = 1
    services.recurring_settings_update(
        space=space,
        acting_user=space_admin,
        auto_approve_up_to_minor=0,
        auto_approve_currency="EUR",
        card_reminder_days=30,
    )
    make_line(seed_customer, key=SEED_KEY, charge_date=soon(20))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.recurring_card_reminders_send() == 1
    assert len(mail.outbox) == 1


def test_lines_with_a_card_paused_or_far_ahead_get_no_reminder(
    seed_customer, seed_card, make_line, clerk, django_capture_on_commit_callbacks
):
    make_line(seed_customer, card=seed_card(exp_year=2034), charge_date=soon(1))
    paused = make_line(seed_customer, key=SEED_KEY, charge_date=soon(1))
    services.recurring_line_pause(line=paused, acting_user=clerk)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.recurring_card_reminders_send() == 0
    assert mail.outbox == []


# --- Generations ------------------------------------------------------------------------------


def _rule(space, admin, up_to):
    return services.recurring_settings_update(
        space=space,
        acting_user=admin,
        auto_approve_up_to_minor=up_to,
        auto_approve_currency="EUR",
        card_reminder_days=None,
    )


def _due(line):
    RecurringLine.objects.filter(pk=line.pk).update(charge_date=timezone.localdate())
    line.refresh_from_db()
    return line


def test_a_due_line_within_the_rule_is_charged_once_and_its_next_generation_copies_key_and_card(
    space,
    space_admin,
    seed_customer,
    make_line,
    register_for,
    localstripe,
    django_capture_on_commit_callbacks,
):
    _rule(space, space_admin, up_to=5000)
    card = register_for(seed_customer).card
    ChargeIssue.objects.all().delete()  # the registration's own "message start" issue
    line = _due(make_line(seed_customer, card=card, amount=4990))
    today = line.charge_date

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.recurring_lines_generate_due() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert services.recurring_lines_generate_due() == 0  # the doubled run

    line.refresh_from_db()
    issue = line.charge_issue
    assert line.status == Status.GENERATED
    assert (issue.state, issue.amount_minor, issue.source) == (State.SUCCEEDED, 4990, "recurring")
    approved = ChargeIssueEvent.objects.get(issue=issue, action="approved_by_rule")
    assert approved.actor is None and approved.detail["set_by"] == space_admin.username
    assert approved.detail["up_to_minor"] == 5000 and "radmin" in approved.comment
    nxt = line.next_generation
    assert (nxt.generation, nxt.generated_from, nxt.status) == (2, line, Status.ACTIVE)
    assert (nxt.card, nxt.card_lookup_key, nxt.series) == (card, line.card_lookup_key, line.series)
    assert nxt.charge_date > today and nxt.charge_issue is None
    intents = [
        pi
        for pi in localstripe.list("payment_intents")
        if pi["metadata"].get("charge_issue") == str(issue.pk)
    ]
    assert len(intents) == 1 and intents[0]["amount"] == 4990
    assert ChargeIssue.objects.count() == 1


def test_above_the_rule_the_issue_waits_for_an_approver(
    space, space_admin, seed_customer, seed_card, make_line, approver
):
    _rule(space, space_admin, up_to=1000)
    line = _due(make_line(seed_customer, card=seed_card(exp_year=2034), amount=4990))

    services.recurring_lines_generate_due()

    line.refresh_from_db()
    issue = line.charge_issue
    assert issue.state == State.AWAITING_APPROVAL and issue.entered_by is None
    assert not ChargeIssueEvent.objects.filter(issue=issue, action="approved_by_rule").exists()
    billing_services.charge_issue_approve(issue=issue, acting_user=approver)
    issue.refresh_from_db()
    assert issue.state == State.APPROVED and issue.approved_by == approver


def test_a_doubled_period_is_refused_by_the_database(seed_customer, seed_card, make_line):
    from django.db import IntegrityError, transaction

    line = make_line(seed_customer, card=seed_card(exp_year=2034))
    with pytest.raises(IntegrityError), transaction.atomic():
        RecurringLine.objects.create(
            space=line.space,
            customer=line.customer,
            series=line.series,
            amount_minor=line.amount_minor,
            currency=line.currency,
            charge_date=line.charge_date,
        )


def test_a_due_line_without_a_card_waits_and_a_crash_halfway_loses_nothing(
    seed_customer, seed_card, make_line, monkeypatch
):
    card = seed_card(exp_year=2034)
    waiting = _due(make_line(seed_customer, key=SEED_KEY))
    lines = [_due(make_line(seed_customer, card=card, amount=1000 + i)) for i in range(4)]
    real = services.recurring_line_generate
    calls = []

    def crash_on_third(**kwargs):
        # Fault injection: the worker dies while handling the third line.
        calls.append(kwargs["line_id"])
        if len(calls) == 3:
            raise SystemExit("worker killed")
        return real(**kwargs)

    monkeypatch.setattr(services, "recurring_line_generate", crash_on_third)
    with pytest.raises(SystemExit):
        services.recurring_lines_generate_due(batch_size=2)
    monkeypatch.setattr(services, "recurring_line_generate", real)
    assert RecurringLine.objects.filter(status=Status.GENERATED).count() == 1

    assert services.recurring_lines_generate_due(batch_size=2) == 3

    assert RecurringLine.objects.filter(status=Status.GENERATED).count() == 4
    assert sorted(ChargeIssue.objects.values_list("amount_minor", flat=True)) == [
        1000,
        1001,
        1002,
        1003,
    ]
    waiting.refresh_from_db()
    assert waiting.status == Status.ACTIVE and waiting.charge_issue is None
    nexts = RecurringLine.objects.filter(generated_from__in=lines)
    assert sorted(nexts.values_list("generation", "amount_minor")) == [
        (2, 1000 + i) for i in range(4)
    ]
    assert all(n.charge_date > timezone.localdate() and n.card == card for n in nexts)


def test_a_declined_generation_goes_to_collection_like_any_failed_charge(
    space,
    space_admin,
    seed_customer,
    make_line,
    register_for,
    localstripe,
    django_capture_on_commit_callbacks,
):
    _rule(space, space_admin, up_to=5000)
    card = register_for(seed_customer, number="4000000000000341").card  # declines when charged
    line = _due(make_line(seed_customer, card=card, amount=2500))

    with django_capture_on_commit_callbacks(execute=True):
        services.recurring_lines_generate_due()

    line.refresh_from_db()
    issue = line.charge_issue
    # A failed charge is never a dead end: the space's charge flow collects it (issue 9).
    assert issue.state == State.COLLECTING and issue.failure_code
    assert issue.flow_case.state == issue.flow_case.State.RUNNING
    assert line.next_generation.card == card  # the next period tries again


def test_settings_changes_are_audited_and_only_admins_may_make_them(space, space_admin, clerk):
    from recurring.exceptions import NotAllowed

    with pytest.raises(NotAllowed):
        _rule(space, clerk, up_to=100)
    _rule(space, space_admin, up_to=2500)
    row = RecurringSettings.objects.get(space=space)
    assert (row.auto_approve_up_to_minor, row.updated_by) == (2500, space_admin)
    event = RecurringEvent.objects.get(action="settings_changed")
    assert event.actor == space_admin and event.detail["after"]["auto_approve_up_to_minor"] == 2500
