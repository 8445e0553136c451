from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from billing import services as billing_services
from billing.models import ChargeIssue
from chargeflows import services
from chargeflows.exceptions import IllegalTransition, InvalidInput, StaleEdit
from chargeflows.models import (
    FLOW_TRANSITIONS,
    CaseFacts,
    ChargeFlow,
    ChargeFlowCase,
    ChargeFlowCaseEvent,
    ChargeFlowCondition,
    ChargeFlowLevel,
    ChargeFlowLevelConfiguration,
    ChargeFlowLevelPaymentLink,
)
from chargeflows.selectors import case_facts, charge_flow_select
from payments.models import ChargeAttempt, OutboundEvent
from tests.chargeflows.conftest import (
    AUTHENTICATION,
    DECLINES,
    VISA,
    approved_issue,
    intents_for_issue,
    one_level_flow,
    real_card,
    real_customer,
)
from tests.factories import SpaceFactory

pytestmark = pytest.mark.django_db
Case = ChargeFlowCase.State
Level = ChargeFlowLevel.State


def _collect(issue, approver, capture):
    """Staff send the approved issue to collection; the case opens and its first level runs
    (tasks run inline on commit)."""
    with capture(execute=True):
        billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    issue.refresh_from_db()
    return ChargeFlowCase.objects.get(issue=issue)


def _beat(capture):
    with capture(execute=True):
        return services.flow_levels_due_dispatch()


# --- Configuration ------------------------------------------------------------------------------


def test_a_new_space_gets_the_default_flow():
    space = SpaceFactory()

    (flow,) = ChargeFlow.objects.filter(space=space)
    assert flow.is_default and flow.state == ChargeFlow.State.ACTIVE
    levels = list(flow.levels.order_by("priority"))
    assert [level.period for level in levels] == [
        timedelta(days=3),
        timedelta(days=1),
        timedelta(days=14),
    ]
    assert levels[0].notify_customer and levels[0].run_token_charge
    assert levels[2].run_payment_link and not levels[2].run_token_charge
    # Only once, whatever calls the service again.
    assert services.charge_flow_default_create(space=space) is None
    assert ChargeFlow.objects.filter(space=space).count() == 1


def _facts(**kwargs):
    return CaseFacts(
        **{
            "amount_minor": 5000,
            "currency": "EUR",
            "card_brand": "Visa",
            "origin": "manual",
            "last_decline_code": "insufficient_funds",
            **kwargs,
        }
    )


@pytest.mark.parametrize(
    ("condition", "holds", "fails"),
    [
        (
            {"kind": "amount_range", "min_amount_minor": 1000, "max_amount_minor": 5000},
            {},
            {"amount_minor": 5001},
        ),
        ({"kind": "currency", "value": "eur"}, {}, {"currency": "CHF"}),
        ({"kind": "card_brand", "value": "visa"}, {}, {"card_brand": "Mastercard"}),
        ({"kind": "origin", "value": "api"}, {"origin": "api"}, {}),
        (
            {"kind": "customer_tag", "value": " VIP"},
            {"customer_tags": frozenset({"vip", "wholesale"})},
            {"customer_tags": frozenset({"wholesale"})},
        ),
        (
            {"kind": "last_decline_code", "value": "expired_card"},
            {"last_decline_code": "expired_card"},
            {},
        ),
    ],
)
def test_each_condition_kind_holds_or_not(condition, holds, fails):
    rule = ChargeFlowCondition(**condition)
    assert rule.holds(_facts(**holds)) is True
    assert rule.holds(_facts(**fails)) is False


def test_selection_by_priority_and_conditions(space):
    default = ChargeFlow.objects.get(space=space)
    big = one_level_flow(space, priority=1)
    ChargeFlowCondition.objects.create(flow=big, kind="amount_range", min_amount_minor=100_00)
    expired = one_level_flow(space, priority=2)
    ChargeFlowCondition.objects.create(flow=expired, kind="last_decline_code", value="expired_card")

    assert charge_flow_select(space_id=space.pk, facts=_facts(amount_minor=200_00)) == big
    chosen = charge_flow_select(space_id=space.pk, facts=_facts(last_decline_code="expired_card"))
    assert chosen == expired
    assert charge_flow_select(space_id=space.pk, facts=_facts()) == default
    # A change of priority takes effect at once for selections still to come.
    ChargeFlow.objects.filter(pk=expired.pk).update(priority=0)
    facts = _facts(amount_minor=200_00, last_decline_code="expired_card")
    assert charge_flow_select(space_id=space.pk, facts=facts) == expired
    # Deactivated flows are not chosen; activated again, they are.
    ChargeFlow.objects.filter(space=space).update(state=ChargeFlow.State.INACTIVE)
    assert charge_flow_select(space_id=space.pk, facts=_facts()) is None


def test_the_chosen_flow_is_kept_after_edits(
    space, clerk, approver, flow_admin, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    first = one_level_flow(space, priority=1, run_payment_link=True)
    case = _collect(issue, approver, django_capture_on_commit_callbacks)
    assert case.flow == first

    services.charge_flow_update(
        flow=first, expected_version=first.version, acting_user=flow_admin, priority=500
    )
    first.refresh_from_db()
    services.charge_flow_transition(
        flow=first,
        to_state=ChargeFlow.State.INACTIVE,
        expected_version=first.version,
        acting_user=flow_admin,
    )
    case.refresh_from_db()
    assert case.flow == first
    # A later selection sees the new order; the customer's tags are part of the facts.
    type(customer).objects.filter(pk=customer.pk).update(tags="VIP, wholesale")
    issue.refresh_from_db()
    facts = case_facts(issue)
    assert facts.customer_tags == frozenset({"vip", "wholesale"})
    assert charge_flow_select(space_id=space.pk, facts=facts).is_default


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [(a, b) for a, targets in FLOW_TRANSITIONS.items() for b in targets if b != "deleted"],
)
def test_each_declared_flow_transition_works(space, flow_admin, from_state, to_state):
    flow = ChargeFlow.objects.create(space=space, name="F", state=from_state)
    flow = services.charge_flow_transition(
        flow=flow, to_state=to_state, expected_version=flow.version, acting_user=flow_admin
    )
    assert flow.state == to_state and flow.version == 2
    assert ChargeFlowCaseEvent.objects.get(flow=flow, action="flow_state").actor == flow_admin


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [
        (a, b)
        for a in FLOW_TRANSITIONS
        for b in ChargeFlow.State.values
        if b not in FLOW_TRANSITIONS[a] or b == "deleted"
    ],
)
def test_each_undeclared_flow_transition_is_refused(space, flow_admin, from_state, to_state):
    flow = ChargeFlow.objects.create(space=space, name="F", state=from_state)
    with pytest.raises(IllegalTransition):
        services.charge_flow_transition(
            flow=flow, to_state=to_state, expected_version=flow.version, acting_user=flow_admin
        )
    flow.refresh_from_db()
    assert (flow.state, flow.version) == (from_state, 1)


def test_a_stale_edit_is_refused_naming_who_and_when(space, flow_admin):
    other = type(flow_admin).objects.create(username="admin2", is_staff=True)
    other.groups.set(flow_admin.groups.all())
    from spaces.models import SpaceMembership

    SpaceMembership.objects.create(space=space, user=other)
    flow = ChargeFlow.objects.get(space=space)
    read_version = flow.version

    services.charge_flow_update(
        flow=flow, expected_version=read_version, acting_user=other, name="Renamed"
    )
    with pytest.raises(StaleEdit) as refused:
        services.charge_flow_update(
            flow=flow, expected_version=read_version, acting_user=flow_admin, priority=3
        )

    assert "admin2" in refused.value.message
    flow.refresh_from_db()
    assert (flow.name, flow.priority, flow.version) == ("Renamed", 1000, 2)


def test_condition_edits_are_versioned_audited_and_validated(space, flow_admin):
    flow = ChargeFlow.objects.get(space=space)
    services.charge_flow_conditions_set(
        flow=flow,
        conditions=[{"kind": "last_decline_code", "value": "expired_card"}],
        expected_version=1,
        acting_user=flow_admin,
    )
    # A copy read at version 1 is stale now, whatever it changes.
    with pytest.raises(StaleEdit) as refused:
        services.charge_flow_conditions_set(
            flow=flow, conditions=[], expected_version=1, acting_user=flow_admin
        )
    assert "admin1 changed this at" in refused.value.message
    # Bad conditions are refused before anything is written.
    for bad in (
        {"kind": "amount_range"},
        {"kind": "currency", "value": ""},
        {"kind": "nope", "value": "x"},
    ):
        with pytest.raises(InvalidInput):
            services.charge_flow_conditions_set(
                flow=flow, conditions=[bad], expected_version=2, acting_user=flow_admin
            )
    flow.refresh_from_db()
    assert flow.version == 2
    assert [str(c) for c in flow.conditions.all()] == ["last_decline_code = expired_card"]
    assert (
        ChargeFlowCaseEvent.objects.filter(
            flow=flow, action="conditions_changed", actor=flow_admin
        ).count()
        == 1
    )


def test_deleting_waits_for_running_cases_then_purge_removes_it(
    space, clerk, approver, flow_admin, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    used = one_level_flow(space, priority=1, run_payment_link=True)
    unused = one_level_flow(space, priority=2)
    case = _collect(issue, approver, django_capture_on_commit_callbacks)
    for flow in (used, unused):
        services.charge_flow_transition(
            flow=flow, to_state="deleting", expected_version=flow.version, acting_user=flow_admin
        )
    ChargeFlow.objects.filter(pk__in=[used.pk, unused.pk]).update(planned_purge_date=timezone.now())

    services.charge_flows_purge()
    assert ChargeFlow.objects.get(pk=used.pk).state == ChargeFlow.State.DELETING  # case runs
    assert not ChargeFlow.objects.filter(pk=unused.pk).exists()

    services.case_cancel(case=case, acting_user=approver)
    services.charge_flows_purge()
    # Deleted; the row stays while a (finished) case refers to it.
    assert ChargeFlow.objects.get(pk=used.pk).state == ChargeFlow.State.DELETED


# --- Entry and the fall-through -----------------------------------------------------------------


def test_the_saved_card_collects_and_completes_case_and_issue(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, VISA), clerk, approver)

    case = _collect(issue, approver, django_capture_on_commit_callbacks)

    issue.refresh_from_db()
    case.refresh_from_db()
    assert (case.state, issue.state) == (Case.SUCCEEDED, ChargeIssue.State.SUCCEEDED)
    (level,) = case.levels.all()
    assert (level.state, level.position) == (Level.SUCCESSFUL, 1)
    (intent,) = intents_for_issue(localstripe, issue)
    assert intent["amount"] == 1234 and intent["status"] == "succeeded"
    assert intent["metadata"]["charge_flow_level"] == str(level.pk)
    assert level.attempts.get().status == ChargeAttempt.Status.SUCCEEDED
    assert [e.action for e in issue.events.all()][-2:] == [
        "sent_to_collection",
        "collection_succeeded",
    ]
    # The first level tells the customer at once what comes next; then the receipt.
    customer_mails = [m for m in mail.outbox if m.to == [issue.customer_email]]
    (notice,) = [m for m in customer_mails if "did not go through" in m.subject]
    assert "€12.34" in notice.body
    assert "we try your saved card again" in notice.body
    assert "we email you a payment link" in notice.body


def test_token_declines_and_the_second_card_collects(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    card = real_card(customer, DECLINES)
    second = real_card(customer, VISA, is_default=False)
    issue = approved_issue(customer, card, clerk, approver)

    case = _collect(issue, approver, django_capture_on_commit_callbacks)

    case.refresh_from_db()
    assert case.state == Case.SUCCEEDED
    level = case.levels.get()
    attempts = list(level.attempts.order_by("pk"))
    assert [a.provider_payment_method_id for a in attempts] == [
        card.provider_payment_method_id,
        second.provider_payment_method_id,
    ]
    assert [a.status for a in attempts] == ["failed", "succeeded"]
    assert level.failures[0]["step"] == "token" and level.failures[0]["code"]
    intents = intents_for_issue(localstripe, issue)
    assert sorted(pi["status"] for pi in intents) == ["requires_payment_method", "succeeded"]


def test_authentication_required_is_soft_and_moves_on_to_the_link(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, AUTHENTICATION), clerk, approver)
    one_level_flow(space, run_token_charge=True, run_saved_method=True, run_payment_link=True)

    case = _collect(issue, approver, django_capture_on_commit_callbacks)

    level = case.levels.get()
    assert level.state == Level.PENDING and level.step == ChargeFlowLevel.Step.WAITING
    (attempt,) = level.attempts.all()
    assert attempt.status == "failed" and not attempt.hard_decline
    assert ChargeFlowLevelPaymentLink.objects.filter(level=level).exists()


def test_both_fail_and_the_email_with_a_working_link_goes_out(
    client, space, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space, preferred_language="de")
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    real_card(customer, DECLINES, is_default=False)
    one_level_flow(space, run_token_charge=True, run_saved_method=True, run_payment_link=True)
    mail.outbox.clear()

    case = _collect(issue, approver, django_capture_on_commit_callbacks)

    level = case.levels.get()
    assert level.attempts.filter(status="failed").count() == 2
    (email,) = [m for m in mail.outbox if "Zahlung" in m.subject]
    assert email.to == [customer.email] and "12,34\xa0€" in email.body
    url = next(word for word in email.body.split() if word.startswith("http://testserver/pay/"))
    page = client.get(url.removeprefix("http://testserver"))
    assert page.status_code == 200
    assert page.context["issue"].amount_minor == 1234 and "Shop" in page.content.decode()
    assert "Content-Security-Policy" in page.headers


def test_an_expired_card_and_a_hard_decline_skip_the_token(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    card = real_card(customer, VISA)
    issue = approved_issue(customer, card, clerk, approver)
    type(card).objects.filter(pk=card.pk).update(exp_year=2020)
    one_level_flow(space, run_token_charge=True, run_payment_link=True)

    case = _collect(issue, approver, django_capture_on_commit_callbacks)

    level = case.levels.get()
    assert not level.attempts.exists() and intents_for_issue(localstripe, issue) == []
    assert level.failures[0] == {**level.failures[0], "step": "token", "code": "skipped"}


# --- Escalation ---------------------------------------------------------------------------------


def test_escalation_follows_the_periods_exactly_and_the_last_level_fails_the_case(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        case = _collect(issue, approver, django_capture_on_commit_callbacks)
    first = case.levels.get(position=1)
    assert first.times_out_at == start + timedelta(days=3)
    preview = services.case_preview(case=case)
    assert [p["starts_at"] for p in preview] == [
        start + timedelta(days=3),
        start + timedelta(days=4),
    ]

    with time_machine.travel(first.times_out_at - timedelta(seconds=1), tick=False):
        _beat(django_capture_on_commit_callbacks)
    assert case.levels.count() == 1

    with time_machine.travel(first.times_out_at + timedelta(seconds=30), tick=False):
        _beat(django_capture_on_commit_callbacks)
    second = case.levels.get(position=2)
    first.refresh_from_db()
    assert first.state == Level.FAILED
    assert second.started_at == first.times_out_at  # exactly when level 1's period ended
    assert second.attempts.count() == 1  # the token retry

    with time_machine.travel(second.times_out_at + timedelta(seconds=30), tick=False):
        _beat(django_capture_on_commit_callbacks)
    third = case.levels.get(position=3)
    assert (
        third.payment_link.expires_at
        == third.times_out_at
        == second.times_out_at + timedelta(days=14)
    )
    mail.outbox.clear()

    with time_machine.travel(third.times_out_at + timedelta(seconds=30), tick=False):
        _beat(django_capture_on_commit_callbacks)
    case.refresh_from_db()
    issue.refresh_from_db()
    assert (case.state, issue.state) == (Case.FAILED, ChargeIssue.State.FAILED)
    assert [lv.state for lv in case.levels.all()] == [Level.FAILED] * 3
    staff = [m for m in mail.outbox if approver.email in m.to]
    assert len(staff) == 1 and "What to do:" in staff[0].body
    # One token retry in each of the first two levels; the link level charges nothing.
    assert ChargeAttempt.objects.filter(flow_level__case=case).count() == 2


# --- Exactly once -------------------------------------------------------------------------------


def test_a_level_run_delivered_twice_charges_once(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks
):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    one_level_flow(space, run_token_charge=True)
    with django_capture_on_commit_callbacks(execute=False):
        billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.charge_flow_case_open(issue_id=issue.pk)
    level = ChargeFlowLevel.objects.get()
    assert level.step == ChargeFlowLevel.Step.TOKEN
    assert level.claimed_until > timezone.now()

    # The level's run message delivered twice (and the beat finding nothing due: leased).
    for callback in callbacks + callbacks:
        callback()
    assert services.flow_levels_claim() == []

    assert len(intents_for_issue(localstripe, issue)) == 1
    assert ChargeAttempt.objects.filter(flow_level=level).count() == 1


# --- Outbound events ----------------------------------------------------------------------------


def test_collection_events_are_written_for_the_space_webhook(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks, settings
):
    settings.WEBHOOK_ALLOWED_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    space.webhook_url = "http://127.0.0.1:9/hook"  # nothing listens: rows stay undelivered
    space.save()
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    one_level_flow(space, run_token_charge=True, run_payment_link=True)

    _collect(issue, approver, django_capture_on_commit_callbacks)

    types = list(OutboundEvent.objects.order_by("created_at").values_list("type", flat=True))
    assert "collection.level_started" in types and "collection.link_sent" in types
    link_sent = OutboundEvent.objects.get(type="collection.link_sent")
    assert "url" not in link_sent.payload["data"]  # emailed: the URL is not broadcast


def test_configuration_can_send_the_link_by_signed_event(
    space, clerk, approver, localstripe, django_capture_on_commit_callbacks, settings
):
    settings.WEBHOOK_ALLOWED_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    space.webhook_url = "http://127.0.0.1:9/hook"
    space.save()
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    flow = one_level_flow(space, run_payment_link=True)
    ChargeFlowLevelConfiguration.objects.filter(flow=flow).update(link_delivery="outbound_event")
    mail.outbox.clear()

    _collect(issue, approver, django_capture_on_commit_callbacks)

    event = OutboundEvent.objects.get(type="collection.link_sent")
    assert event.payload["data"]["url"].startswith("http://testserver/pay/")
    assert not [m for m in mail.outbox if m.to == [customer.email] and "pay" in m.body]


@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_the_levels_another_open_claim_holds(localstripe):
    """Two claims at once in two connections: the second takes only the levels the first
    did not lock, and each lease is on the row it names (the claim finds rows by ctid)."""
    import psycopg
    from django.db import connection

    from spaces.roles import APPROVER, CLERK
    from tests.factories import StaffUserFactory

    space = SpaceFactory()
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    approver = StaffUserFactory(role=APPROVER, spaces=[space])
    one_level_flow(space)
    for _ in range(5):
        customer = real_customer(space)
        issue = approved_issue(customer, real_card(customer, VISA), clerk, approver)
        billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    now = timezone.now()
    ChargeFlowLevel.objects.update(due_at=now - timedelta(minutes=1), claimed_until=None)

    settings = connection.settings_dict
    other = psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"],
        dbname=settings["NAME"],
    )
    try:
        first_lease = now + timedelta(minutes=1)
        first = other.execute(
            services.CLAIM_SQL.format(level=ChargeFlowLevel._meta.db_table),
            {
                "lease": first_lease,
                "pending": "pending",
                "now": now,
                "limit": 2,
                "requeue_before": now,
            },
        ).fetchall()  # not committed yet: the two rows stay locked
        second = services.flow_levels_claim(now=now, limit=10)
        other.commit()
    finally:
        other.close()

    first_ids = {row[0] for row in first}
    second_ids = {level_id for level_id, _ in second}
    assert len(first_ids) == 2 and len(second_ids) == 3 and not first_ids & second_ids
    leases = dict(ChargeFlowLevel.objects.values_list("pk", "claimed_until"))
    assert {pk for pk, lease in leases.items() if lease == first_lease} == first_ids
    assert {pk for pk, lease in leases.items() if lease == now + services.LEASE} == second_ids


@pytest.mark.django_db(transaction=True)
def test_two_workers_and_a_doubled_beat_charge_each_due_level_once(localstripe):
    import threading
    import time

    from django.db import connection

    from spaces.roles import APPROVER, CLERK
    from tests.factories import StaffUserFactory

    space = SpaceFactory()
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    approver = StaffUserFactory(role=APPROVER, spaces=[space])
    # Level 1 only waits (a second); level 2 charges the card: the beat finds level 1 due.
    flow = one_level_flow(space)
    ChargeFlowLevelConfiguration.objects.filter(flow=flow).update(period=timedelta(seconds=1))
    ChargeFlowLevelConfiguration.objects.create(
        flow=flow, name="Retry", priority=2, period=timedelta(days=1), run_token_charge=True
    )
    issues = []
    for _ in range(6):
        customer = real_customer(space)
        issue = approved_issue(customer, real_card(customer, VISA), clerk, approver)
        billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
        issues.append(issue)
    assert ChargeFlowLevel.objects.filter(step=ChargeFlowLevel.Step.WAITING).count() == 6
    time.sleep(1.2)

    barrier = threading.Barrier(3)
    errors = []

    def beat():
        try:
            barrier.wait()
            services.flow_levels_due_dispatch()  # claim, then each run (tasks run inline)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    customers = {issue.provider_customer_id for issue in issues}
    charged = [
        pi["metadata"]["charge_flow_level"]
        for pi in localstripe.list("payment_intents")
        if pi.get("customer") in customers and pi["metadata"].get("charge_flow_level")
    ]
    assert len(charged) == len(set(charged)) == 6
    assert ChargeFlowCase.objects.filter(state=Case.SUCCEEDED).count() == 6
    assert ChargeIssue.objects.filter(state=ChargeIssue.State.SUCCEEDED).count() == 6
