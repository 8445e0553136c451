"""The collection path under concurrency (the one lock order, chargeflows/locks.py).

- A level run delivered twice: whichever copy holds the level's lock charges it, at once; a
  copy holding the lock never leaves the level to wait out its lease.
- Staff actions and settlements on the same case (from the worker, a provider webhook, the
  reconciler, the payment page) and level runs never deadlock, and the case ends consistent.

Transactional tests: every copy of a task, every settlement and every staff action runs in a
thread of its own on a database connection of its own, against localstripe. The interleavings
that matter are forced, not hoped for: a thread stops right after a row lock until its
partner holds the row the interleaving names, waits for a lock (pg_stat_activity says so) or
has finished. Nothing is timed; PATIENCE only ends a test that went wrong.
"""

import re
import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, connections
from django.db.models import Q
from django.utils import timezone

from billing import services as billing_services
from billing.models import ChargeIssue
from chargeflows import services
from chargeflows.exceptions import ChargeFlowError
from chargeflows.models import (
    ChargeFlow,
    ChargeFlowCase,
    ChargeFlowLevel,
    ChargeFlowLevelConfiguration,
    ChargeFlowLevelPaymentLink,
)
from payments import attempts, webhooks
from payments.models import ChargeAttempt, ProviderEvent
from spaces.roles import ADMIN, APPROVER, CLERK
from tests.chargeflows.conftest import (
    DECLINES,
    VISA,
    approved_issue,
    intents_for_issue,
    real_card,
    real_customer,
)
from tests.conftest import confirm_setup_intent
from tests.factories import SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db(transaction=True)

PATIENCE = 30.0
Case = ChargeFlowCase.State
Level = ChargeFlowLevel.State
Status = ChargeAttempt.Status
ISSUE = ChargeIssue._meta.db_table
CASE = ChargeFlowCase._meta.db_table
LEVEL = ChargeFlowLevel._meta.db_table
ANY = "any row"


# --- Threads that meet at row locks --------------------------------------------------------------

_UPDATE = re.compile(r'^\s*UPDATE\s+"(\w+)"', re.I)
_FOR_UPDATE_OF = re.compile(r"\bFOR (?:NO KEY )?UPDATE OF ([^;]+)", re.I)
_FOR_UPDATE = re.compile(r"\bFOR (?:NO KEY )?UPDATE\b", re.I)
_FROM = re.compile(r'\bFROM\s+"(\w+)"', re.I)


def tables_locked(sql: str) -> set[str]:
    """The tables whose rows a statement locks for writing (UPDATE, SELECT … FOR UPDATE)."""
    if match := _UPDATE.match(sql):
        return {match[1]}
    if match := _FOR_UPDATE_OF.search(sql):
        return set(re.findall(r'"(\w+)"', match[1]))
    if _FOR_UPDATE.search(sql) and (match := _FROM.search(sql)):
        return {match[1]}
    return set()


class LockWatch:
    """A connection of its own that tells whether another backend waits for a row lock (on
    the transaction holding it, or in the tuple's queue)."""

    def __init__(self):
        db = connection.settings_dict
        self._conn = psycopg.connect(
            host=db["HOST"] or "127.0.0.1",
            port=db["PORT"] or 5432,
            user=db["USER"],
            password=db["PASSWORD"],
            dbname=db["NAME"],
            autocommit=True,
        )
        self._mutex = threading.Lock()

    def waits(self, pid: int | None) -> bool:
        if pid is None:
            return False
        with self._mutex:
            row = self._conn.execute(
                "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()
        return row is not None and row[0] == "Lock" and row[1] in ("transactionid", "tuple")

    def close(self):
        self._conn.close()


@pytest.fixture
def watch():
    watch = LockWatch()
    yield watch
    watch.close()


class Actor(threading.Thread):
    """A task or a staff member: `work` in a thread on its own database connection.

    hold=(mine, theirs): right after this actor first locks a row of table `mine` (ANY: any
    row), it keeps its transaction open until its partner holds a row of `theirs` (ANY: has
    locked anything; None: only the next two count), waits for a lock, or is done.
    arm_on_provider_answer: rows count only from the moment the provider answered this
    actor's charge (payments' test hook), so the meeting is at the settlement, not the claim;
    arm_after_first_commit: only from this actor's second transaction on.
    first_commit_hook: called once, right after this actor's first commit.
    """

    def __init__(
        self,
        name,
        work,
        watch,
        *,
        hold=None,
        start_after=None,
        arm_on_provider_answer=False,
        arm_after_first_commit=False,
    ):
        super().__init__(name=name, daemon=True)
        self.work, self.watch, self.hold = work, watch, hold
        self.start_after = start_after
        self.arm_on_provider_answer = arm_on_provider_answer
        self.armed = threading.Event()
        self.first_commit_hook = None
        if arm_after_first_commit:
            self.first_commit_hook = self.armed.set
        elif not arm_on_provider_answer:
            self.armed.set()
        self.partner: Actor | None = None
        self.held: set[str] = set()
        self.done = threading.Event()
        self.pid: int | None = None
        self.result = self.error = None

    def run(self):
        try:
            connection.ensure_connection()
            self.pid = connection.connection.info.backend_pid
            if self.start_after is not None and not self.start_after.wait(PATIENCE):
                raise AssertionError(f"{self.name} was never let start")
            if self.first_commit_hook is not None:
                self._hook_first_commit()
            with connection.execute_wrapper(self._observe):
                self.result = self.work()
        except BaseException as exc:  # reported by the test's assertions
            self.error = exc
        finally:
            self.done.set()
            connection.close()

    def _hook_first_commit(self):
        wrapper = connections["default"]  # this thread's own
        real_commit, hook = wrapper.commit, self.first_commit_hook

        def commit():
            real_commit()
            if wrapper.commit is commit:
                del wrapper.commit  # once
                hook()

        wrapper.commit = commit

    def _observe(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if self.armed.is_set():
            new = tables_locked(sql) - self.held
            self.held |= new
            if self.hold and new and (self.hold[0] == ANY or self.hold[0] in new):
                theirs, self.hold = self.hold[1], None
                self.wait_for_partner(theirs)
        return result

    def wait_for_partner(self, theirs: str | None):
        partner = self.partner
        deadline = time.monotonic() + PATIENCE
        while not (
            (theirs == ANY and partner.held)
            or (theirs is not None and theirs in partner.held)
            or partner.done.is_set()
            or self.watch.waits(partner.pid)
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {partner.name} never came")
            time.sleep(0.005)


def pair(first: Actor, second: Actor) -> None:
    first.partner, second.partner = second, first


def run_all(*actors: Actor) -> None:
    for actor in actors:
        actor.start()
    for actor in actors:
        actor.join(PATIENCE * 3)
        assert not actor.is_alive(), f"{actor.name} is stuck"


@pytest.fixture
def provider_answer_arms(monkeypatch):
    """payments' test hook between the provider's answer and its record arms the actor."""

    def arm():
        actor = threading.current_thread()
        if isinstance(actor, Actor) and actor.arm_on_provider_answer:
            actor.armed.set()

    monkeypatch.setattr(attempts, "_test_pause_after_provider_call", arm)


# --- Collections in the states each test needs ----------------------------------------------------


class Collections:
    """Issues of one space collected by one flow: level 1 charges the saved card, then sends
    the payment link; level 2 only sends the link. Each period is a day."""

    def __init__(self, localstripe, monkeypatch):
        self.localstripe, self.monkeypatch = localstripe, monkeypatch
        self.space = SpaceFactory()
        self.clerk = StaffUserFactory(role=CLERK, spaces=[self.space])
        self.approver = StaffUserFactory(role=APPROVER, spaces=[self.space])
        self.admin = StaffUserFactory(role=ADMIN, spaces=[self.space])
        flow = ChargeFlow.objects.create(
            space=self.space, name="Collect", priority=1, state=ChargeFlow.State.ACTIVE
        )
        for priority, name, token in ((1, "Card", True), (2, "Last", False)):
            ChargeFlowLevelConfiguration.objects.create(
                flow=flow,
                name=name,
                priority=priority,
                period=timedelta(days=1),
                run_token_charge=token,
                run_saved_method=False,
                run_payment_link=True,
            )

    def opened(self, number=VISA):
        """A case just opened: its first level leased, its run's message not yet delivered.
        Returns the issue and that message (level id, lease)."""
        customer = real_customer(self.space)
        issue = approved_issue(customer, real_card(customer, number), self.clerk, self.approver)
        messages = []
        with self.monkeypatch.context() as patch:
            patch.setattr(
                services,
                "_dispatch_run",
                lambda level: messages.append((level.pk, level.claimed_until.isoformat())),
            )
            billing_services.charge_issue_send_to_collection(issue=issue, acting_user=self.approver)
        (message,) = messages
        return issue, message

    def charged_unrecorded(self):
        """A case whose level charged the card at the provider, and whose worker died before
        recording it: the attempt is pending, the PaymentIntent succeeded."""
        issue, (level_id, lease) = self.opened(VISA)

        def killed(**kwargs):
            raise SystemExit("worker killed")  # fault injection after the provider call

        with self.monkeypatch.context() as patch:
            patch.setattr(attempts, "attempt_record", killed)
            with pytest.raises(SystemExit):
                services.flow_level_run(level_id=level_id, lease=lease)
        attempt = ChargeAttempt.objects.get(flow_level_id=level_id)
        assert attempt.status == Status.PENDING
        return issue, attempt

    def waiting_for_link(self):
        """A case whose card was declined: level 1 sent the link and waits."""
        issue, (level_id, lease) = self.opened(DECLINES)
        services.flow_level_run(level_id=level_id, lease=lease)  # the follow-up runs inline
        level = ChargeFlowLevel.objects.get(pk=level_id)
        assert level.step == ChargeFlowLevel.Step.WAITING
        return issue, ChargeFlowLevelPaymentLink.objects.get(level=level)

    def case(self, issue) -> ChargeFlowCase:
        return ChargeFlowCase.objects.get(issue=issue)


@pytest.fixture
def collections(localstripe, monkeypatch):
    return Collections(localstripe, monkeypatch)


def assert_consistent(issue, localstripe):
    """The case, its levels, its issue, its attempts and the provider agree."""
    case = ChargeFlowCase.objects.get(issue=issue)
    issue.refresh_from_db()
    levels = list(case.levels.order_by("position"))
    assert [level.position for level in levels] == list(range(1, len(levels) + 1))
    pending = [level for level in levels if level.state == Level.PENDING]
    assert len(pending) == (1 if case.state == Case.RUNNING else 0), (case.state, levels)
    assert (
        issue.state
        == {
            Case.RUNNING: ChargeIssue.State.COLLECTING,
            Case.SUCCEEDED: ChargeIssue.State.SUCCEEDED,
            Case.FAILED: ChargeIssue.State.FAILED,
            Case.CANCELLED: ChargeIssue.State.CANCELLED,
        }[case.state]
    )
    charges = ChargeAttempt.objects.filter(
        Q(flow_level__case=case) | Q(payment_link__level__case=case)
    )
    assert {attempt.status for attempt in charges} <= {Status.SUCCEEDED, Status.FAILED}
    paid = [attempt for attempt in charges if attempt.status == Status.SUCCEEDED]
    assert len(paid) == (1 if case.state == Case.SUCCEEDED else 0)
    # One PaymentIntent per attempt at the provider, none more.
    assert len(intents_for_issue(localstripe, issue)) == len(charges)
    return case


# --- §6: a duplicate never leaves a level to wait out its lease -----------------------------------


def test_the_copy_holding_the_level_as_the_other_claims_it_leaves_no_level_waiting(
    collections, localstripe, watch
):
    """The run's message is delivered twice. The second copy arrives just as the first has
    committed its first transaction and holds the level's rows while the first copy goes on
    to charge. One of them charges, at once: exactly one PaymentIntent, and the collection is
    done with no beat and no lease run out."""
    issue, (level_id, lease) = collections.opened(VISA)
    first_committed = threading.Event()

    def run():
        return services.flow_level_run(level_id=level_id, lease=lease)

    first = Actor("copy-1", run, watch)
    # The second copy keeps the first row it locks until the first copy has finished, or
    # waits for it.
    second = Actor("copy-2", run, watch, start_after=first_committed, hold=(ANY, None))
    pair(first, second)

    def let_the_second_copy_in():
        first_committed.set()
        first.wait_for_partner(ANY)  # the second copy holds its first row now

    first.first_commit_hook = let_the_second_copy_in
    run_all(first, second)

    assert (first.error, second.error) == (None, None)
    assert len(intents_for_issue(localstripe, issue)) == 1
    assert ChargeAttempt.objects.filter(flow_level_id=level_id).count() == 1
    level = ChargeFlowLevel.objects.get(pk=level_id)
    assert (level.state, level.step) == (Level.SUCCESSFUL, ChargeFlowLevel.Step.DONE)
    case = assert_consistent(issue, localstripe)
    assert case.state == Case.SUCCEEDED
    # Nothing is left for the beat, even once every lease has run out.
    later = timezone.now() + services.LEASE + timedelta(minutes=1)
    assert services.flow_levels_claim(now=later) == []


def test_a_copy_that_holds_the_level_and_dies_does_not_make_the_other_skip_it(
    collections, localstripe, watch
):
    """A copy holds the level's row when the other copy arrives, then its worker is killed
    (its transaction rolls back). The other copy waits for the row and charges it."""
    issue, (level_id, lease) = collections.opened(VISA)
    db = connection.settings_dict
    holder = psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db["PASSWORD"],
        dbname=db["NAME"],
    )
    try:
        holder.execute(f'SELECT id FROM "{LEVEL}" WHERE id = %s FOR UPDATE', [level_id])
        copy = Actor("copy", lambda: services.flow_level_run(level_id=level_id, lease=lease), watch)
        copy.start()
        deadline = time.monotonic() + PATIENCE
        while not (copy.done.is_set() or watch.waits(copy.pid)):
            assert time.monotonic() < deadline, "the copy neither waited nor finished"
            time.sleep(0.005)
        holder.rollback()  # the holding copy's worker is gone
        copy.join(PATIENCE)
    finally:
        holder.close()

    assert copy.error is None
    assert isinstance(copy.result, ChargeAttempt) and copy.result.status == Status.SUCCEEDED
    assert len(intents_for_issue(localstripe, issue)) == 1
    assert assert_consistent(issue, localstripe).state == Case.SUCCEEDED


# --- §6: staff actions and settlements in one lock order ------------------------------------------


def _settlement(kind, collections):
    """(issue, work, arm_on_provider_answer) for a settlement or a level run of one case."""
    if kind == "worker":
        issue, (level_id, lease) = collections.opened(VISA)
        return issue, lambda: services.flow_level_run(level_id=level_id, lease=lease), True
    if kind == "webhook":
        issue, attempt = collections.charged_unrecorded()
        (intent,) = intents_for_issue(collections.localstripe, issue)
        event = ProviderEvent.objects.create(
            provider_event_id=f"evt_{uuid.uuid4().hex}",
            type="payment_intent.succeeded",
            payload={"type": "payment_intent.succeeded", "data": {"object": intent}},
        )

        def process():
            assert webhooks.provider_event_process(event_pk=event.pk), ProviderEvent.objects.get(
                pk=event.pk
            ).last_error

        return issue, process, False
    if kind == "reconciler":
        issue, attempt = collections.charged_unrecorded()
        ChargeAttempt.objects.filter(pk=attempt.pk).update(
            status=Status.UNKNOWN, created_at=timezone.now() - timedelta(minutes=10)
        )
        return issue, attempts.attempts_reconcile, False
    if kind == "payment page":
        issue, link = collections.waiting_for_link()
        secret = services.payment_link_setup_intent(link=link)
        confirmed = confirm_setup_intent(collections.localstripe, secret, VISA)
        assert confirmed["status"] == "succeeded"
        return (
            issue,
            lambda: services.payment_link_pay(link=link, setup_intent_id=confirmed["id"]),
            True,
        )
    if kind == "level run":
        # The level's period ended: the run times it out and starts level 2.
        issue, link = collections.waiting_for_link()
        ended = timezone.now() - timedelta(seconds=1)
        ChargeFlowLevel.objects.filter(pk=link.level_id).update(
            times_out_at=ended, due_at=ended, claimed_until=None
        )
        return issue, lambda: services.flow_level_run(level_id=link.level_id), False
    raise AssertionError(kind)


STAFF_ACTIONS = {
    "next level now": lambda case, user: services.case_level_start_next_now(
        case=case, acting_user=user
    ),
    "cancel": lambda case, user: services.case_cancel(
        case=case, acting_user=user, comment="Paid by bank transfer"
    ),
    "recipient change": lambda case, user: services.case_recipient_change(
        case=case, email="accounts@example.test", acting_user=user
    ),
    "payment link": lambda case, user: services.case_payment_link_url(case=case, acting_user=user),
}


@pytest.mark.parametrize(
    "kind, action",
    [
        # Each of these deadlocked when staff locked case → level and settlement level → case.
        ("worker", "next level now"),
        ("webhook", "next level now"),
        ("reconciler", "next level now"),
        ("payment page", "next level now"),
        ("level run", "next level now"),
        ("level run", "cancel"),
        # The other staff actions, against the other settlements.
        ("worker", "cancel"),
        ("webhook", "recipient change"),
        ("reconciler", "cancel"),
        ("payment page", "cancel"),
        ("payment page", "payment link"),
        ("level run", "recipient change"),
    ],
)
def test_a_staff_action_and_a_settlement_on_one_case_never_deadlock(
    kind, action, collections, localstripe, watch, provider_answer_arms
):
    """The worst interleaving, forced: the settlement (or the level run) has locked the
    case's level and the staff action the case, before either asks for the other's row. In
    one lock order that moment never comes (one of them waits before its first row), and
    both finish: a refusal is a fine answer for the staff action, a deadlock is not."""
    issue, work, arm_on_provider_answer = _settlement(kind, collections)
    case = collections.case(issue)
    settlement = Actor(
        kind,
        work,
        watch,
        hold=(LEVEL, CASE),
        arm_on_provider_answer=arm_on_provider_answer,
    )
    staff = Actor(
        action,
        lambda: STAFF_ACTIONS[action](case, collections.admin),
        watch,
        hold=(CASE, LEVEL),
        # Against a charge, the staff member acts once the provider has answered it.
        start_after=settlement.armed,
    )
    pair(settlement, staff)
    run_all(settlement, staff)

    assert settlement.error is None, repr(settlement.error)
    assert staff.error is None or isinstance(staff.error, ChargeFlowError), repr(staff.error)
    case = assert_consistent(issue, localstripe)
    if kind in ("worker", "webhook", "reconciler", "payment page"):
        # A charge under way is never overtaken: the staff action waits for it or refuses.
        assert case.state == Case.SUCCEEDED
    if kind == "level run":
        # Level 1 ended once, by the run or by the staff member: each level started once.
        assert case.events.filter(action="level_started").count() == case.levels.count()


def test_a_payment_on_the_page_and_a_cancel_at_once_never_charge_a_cancelled_collection(
    collections, localstripe, watch, provider_answer_arms
):
    """The customer pays on the page while staff cancel the collection. The page's claim has
    read the case as running and staff have locked the case before either writes: in one
    lock order that moment never comes. Either the cancel refuses (a charge is under way) and
    the payment completes the case, or the link is retired and nothing is charged; never a
    charge on a cancelled collection."""
    issue, link = collections.waiting_for_link()
    secret = services.payment_link_setup_intent(link=link)
    confirmed = confirm_setup_intent(localstripe, secret, VISA)
    case = collections.case(issue)
    page = Actor(
        "payment page",
        lambda: services.payment_link_pay(link=link, setup_intent_id=confirmed["id"]),
        watch,
        # The page's first transaction keeps the customer's card on the link; the claim of
        # the charge is its second.
        arm_after_first_commit=True,
        hold=(ANY, CASE),
    )
    staff = Actor(
        "cancel",
        lambda: STAFF_ACTIONS["cancel"](case, collections.admin),
        watch,
        start_after=page.armed,
        hold=(CASE, ANY),
    )
    pair(page, staff)
    run_all(page, staff)

    assert page.error is None, repr(page.error)
    assert staff.error is None or isinstance(staff.error, ChargeFlowError), repr(staff.error)
    case = assert_consistent(issue, localstripe)
    assert case.state in (Case.SUCCEEDED, Case.CANCELLED)


def test_several_staff_members_and_the_settlements_of_their_cases_at_once(
    collections, localstripe, watch, provider_answer_arms
):
    """Several cases, each settled by its worker while staff start the next level, cancel
    and change the recipient of the same case, all let go at once, the interleavings left to
    chance: no deadlock, every case ends consistent, and each charge is made once."""
    actors, issues = [], []
    go = threading.Event()
    for _ in range(3):
        issue, (level_id, lease) = collections.opened(VISA)
        issues.append(issue)
        case = collections.case(issue)

        def settle(level_id=level_id, lease=lease):
            return services.flow_level_run(level_id=level_id, lease=lease)

        actors.append(Actor(f"worker {level_id}", settle, watch, start_after=go))
        for action in ("next level now", "cancel", "recipient change"):

            def act(case=case, action=action):
                return STAFF_ACTIONS[action](case, collections.admin)

            actors.append(Actor(f"{action} {case.pk}", act, watch, start_after=go))
    for actor in actors:
        actor.start()
    go.set()
    for actor in actors:
        actor.join(PATIENCE * 3)
        assert not actor.is_alive(), f"{actor.name} is stuck"

    for actor in actors:
        assert actor.error is None or isinstance(actor.error, ChargeFlowError), (
            actor.name,
            repr(actor.error),
        )
    for issue in issues:
        assert_consistent(issue, localstripe)
