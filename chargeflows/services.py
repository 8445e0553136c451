"""Charge flows: configuration with optimistic locking, opening a case, running its levels.

A case advances by its levels' own outcomes and clocks only. Due times live in the level rows
(`due_at`); the runner claims due levels with SKIP LOCKED and leases them (`claimed_until`
= now + LEASE) before dispatching, so a doubled beat never dispatches a level twice and a lost
message comes back when its lease ends. The task carries the lease it was given and does
nothing unless the row still holds that lease (a fencing token: a redelivered message finds
the row moved on). Every charge goes through payments' one money path (chargeflows/charging.py),
claimed in the same transaction as the run that decides it.

Every transaction here that locks more than one row of a collection (issue, case, level,
link) takes them in the one order of chargeflows/locks.py, through its functions.
"""

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext

from billing import services as billing_services
from billing.models import ChargeIssue
from core import tasks as core_tasks
from core.history import history_acting, history_write
from core.tasks import Deadline, requeue_after
from payments import attempts, outbox
from payments.models import ChargeAttempt
from spaces.selectors import user_may_act_in_space

from . import defaults
from .charging import CHARGES, PAYMENT_LINK_CHARGE
from .exceptions import IllegalTransition, InvalidInput, NotAllowed, StaleEdit
from .locks import case_locked, level_locked, link_locked
from .models import (
    CASE_TRANSITIONS,
    FLOW_TRANSITIONS,
    ChargeFlow,
    ChargeFlowCase,
    ChargeFlowCaseEvent,
    ChargeFlowCondition,
    ChargeFlowLevel,
    ChargeFlowLevelConfiguration,
    ChargeFlowLevelPaymentLink,
)
from .selectors import (
    case_facts,
    charge_flow_select,
    level_configuration_next,
    level_payment_method,
    payment_link_attempt,
)
from .tokens import link_token_make

logger = logging.getLogger(__name__)
Level = ChargeFlowLevel
Case = ChargeFlowCase
Step = ChargeFlowLevel.Step

# How long a claimed level stays invisible to other claims before it counts as lost.
LEASE = timedelta(minutes=5)
CLAIM_BATCH = 1000
# A level whose period ends while its link's payment is under way waits this long, again.
LINK_PAYMENT_WAIT = timedelta(minutes=1)
UNSETTLED_ATTEMPT_STATUSES = (
    ChargeAttempt.Status.PENDING,
    ChargeAttempt.Status.PROCESSING,
    ChargeAttempt.Status.UNKNOWN,
)
# An issue left collecting without a case this long lost its signal (or its dispatch failed):
# the sweep, run with the level beat every minute, opens it.
CASE_LOST_AFTER = timedelta(minutes=1)


# --- Helpers ------------------------------------------------------------------------------------


def _audit(*, action, case=None, flow=None, actor=None, detail=None) -> ChargeFlowCaseEvent:
    return ChargeFlowCaseEvent.objects.create(
        case=case, flow=flow, actor=actor, action=action, detail=detail or {}
    )


def _outbound(case: ChargeFlowCase, type: str, data: dict) -> list:
    """An outbound event about a case, written in the caller's transaction; its id (for
    dispatch on commit) in a list, empty when the space has no webhook."""
    if not case.space.webhook_url:
        return []
    issue = case.issue
    payload = {
        "type": type,
        "created": int(timezone.now().timestamp()),
        "data": {
            "case": case.pk,
            "charge_issue": issue.pk,
            "state": case.state,
            "amount_minor": issue.amount_minor,
            "currency": issue.currency,
            "reference": issue.external_reference,
            **data,
        },
    }
    event = outbox.outbound_event_create(space=case.space, type=type, payload=payload)
    return [event.pk]


def _dispatch_on_commit(outbound_ids: list) -> None:
    if outbound_ids:
        ids = list(outbound_ids)
        transaction.on_commit(lambda: outbox.outbound_events_dispatch(ids=ids))


def _case_move(case: ChargeFlowCase, to_state: str, now) -> None:
    if to_state not in CASE_TRANSITIONS[case.state]:
        raise IllegalTransition(f"This collection is {case.get_state_display()}: not possible now.")
    case.state = to_state
    case.finished_at = now
    case.save(update_fields=["state", "finished_at"])


def _require(user, permission: str, space_id: int) -> None:
    if not user_may_act_in_space(user=user, permission=permission, space_id=space_id):
        raise NotAllowed()


def level_window(*, start: datetime, configuration: ChargeFlowLevelConfiguration):
    """When a level starting at `start` times out: the one rule for runs and previews."""
    return start, start + configuration.period


def payment_link_url(link: ChargeFlowLevelPaymentLink) -> str:
    path = reverse("chargeflows:pay", kwargs={"token": link_token_make(link)})
    return settings.PUBLIC_BASE_URL.rstrip("/") + path


# --- Configuration ------------------------------------------------------------------------------


def charge_flow_default_create(*, space) -> ChargeFlow | None:
    """Give a space its default flow if it has none (active or not)."""
    with transaction.atomic():
        if ChargeFlow.objects.filter(space=space).exclude(state=ChargeFlow.State.DELETED).exists():
            return None
        flow = ChargeFlow.objects.create(
            space=space,
            name=defaults.DEFAULT_FLOW_NAME,
            priority=defaults.DEFAULT_FLOW_PRIORITY,
            state=ChargeFlow.State.ACTIVE,
            is_default=True,
        )
        for level in defaults.DEFAULT_LEVELS:
            ChargeFlowLevelConfiguration.objects.create(flow=flow, **level)
        _audit(flow=flow, action="default_created")
    return flow


def _versioned_update(model, *, obj, expected_version: int, acting_user, changes: dict):
    """UPDATE … WHERE id AND version: zero rows means someone saved since this copy was read,
    and the error names who and when (never a lost update). The UPDATE sends no signal, so
    the history row (the values after it, by acting_user) is written here, in the same
    transaction."""
    updated = model.objects.filter(pk=obj.pk, version=expected_version).update(
        **changes, version=F("version") + 1, updated_by=acting_user, updated_at=timezone.now()
    )
    if updated != 1:
        raise stale_edit_error(model.objects.select_related("updated_by").get(pk=obj.pk))
    history_write(model, [obj.pk], user=acting_user)
    obj.refresh_from_db()
    return obj


def stale_edit_error(current) -> StaleEdit:
    """The refusal of a stale copy, naming who saved the row last and when."""
    who = current.updated_by.get_username() if current.updated_by_id else "someone"
    when = timezone.localtime(current.updated_at).strftime("%Y-%m-%d %H:%M:%S")
    return StaleEdit(
        f"{who} changed this at {when} while you were editing it. Reload the page, then make "
        "your change again."
    )


def charge_flow_create(*, space, name: str, priority: int, acting_user, planned_purge_date=None):
    """A new flow starts in Create: it is chosen only once activated (with its levels)."""
    _require(acting_user, "chargeflows.add_chargeflow", space.pk)
    with transaction.atomic(), history_acting(acting_user):
        flow = ChargeFlow.objects.create(
            space=space,
            name=name,
            priority=priority,
            planned_purge_date=planned_purge_date,
            updated_by=acting_user,
        )
        _audit(flow=flow, actor=acting_user, action="flow_created", detail={"name": name})
    return flow


def level_configuration_create(*, acting_user, **fields) -> ChargeFlowLevelConfiguration:
    flow = fields["flow"]
    _require(acting_user, "chargeflows.add_chargeflowlevelconfiguration", flow.space_id)
    with transaction.atomic(), history_acting(acting_user):
        configuration = ChargeFlowLevelConfiguration.objects.create(
            **fields, updated_by=acting_user
        )
        _audit(
            flow=flow,
            actor=acting_user,
            action="level_created",
            detail={"level": configuration.pk, "name": configuration.name},
        )
    return configuration


def charge_flow_update(*, flow: ChargeFlow, expected_version: int, acting_user, **changes):
    """Edit a flow's name, priority or purge date (optimistic locking). A new priority takes
    effect at once for selections still to come; chosen flows never change."""
    _require(acting_user, "chargeflows.change_chargeflow", flow.space_id)
    allowed = {"name", "priority", "planned_purge_date"}
    if "space" in changes and changes.pop("space").pk != flow.space_id:
        raise InvalidInput("A flow stays in its space.", field="space")
    if set(changes) - allowed:
        raise InvalidInput("Only name, priority and purge date are edited here.")
    with transaction.atomic():
        flow = _versioned_update(
            ChargeFlow,
            obj=flow,
            expected_version=expected_version,
            acting_user=acting_user,
            changes=changes,
        )
        _audit(
            flow=flow,
            actor=acting_user,
            action="flow_changed",
            detail={k: str(v) for k, v in changes.items()},
        )
    return flow


CONDITION_FIELDS = ("kind", "min_amount_minor", "max_amount_minor", "value")


def charge_flow_conditions_set(
    *, flow: ChargeFlow, conditions: list[dict], expected_version: int, acting_user
) -> ChargeFlow:
    """Replace a flow's conditions (each a dict of CONDITION_FIELDS) as one edit of the flow:
    its version goes up (a stale copy is refused naming who changed it and when) and its audit
    row records the conditions before and after. Cases already running keep their flow."""
    _require(acting_user, "chargeflows.change_chargeflow", flow.space_id)
    rows = []
    for data in conditions:
        if set(data) - set(CONDITION_FIELDS):
            raise InvalidInput("A condition has a kind, an amount range or a value.")
        row = ChargeFlowCondition(flow=flow, **data)
        try:
            row.full_clean(exclude=["flow"])
        except ValidationError as exc:
            raise InvalidInput(f"Condition {row}: {'; '.join(exc.messages)}") from exc
        rows.append(row)
    with transaction.atomic(), history_acting(acting_user):
        # The versioned UPDATE comes first: it locks the flow row, so two editors of the
        # conditions are serialised and the second one is refused, never merged.
        flow = _versioned_update(
            ChargeFlow,
            obj=flow,
            expected_version=expected_version,
            acting_user=acting_user,
            changes={},
        )
        before = [str(c) for c in flow.conditions.order_by("pk")]
        flow.conditions.all().delete()  # deletes send signals: history rows "-"
        ChargeFlowCondition.objects.bulk_create(rows)
        ChargeFlowCondition.history.bulk_history_create(rows, default_user=acting_user)
        _audit(
            flow=flow,
            actor=acting_user,
            action="conditions_changed",
            detail={"before": before, "after": [str(c) for c in rows]},
        )
    return flow


def charge_flow_transition(
    *, flow: ChargeFlow, to_state: str, expected_version: int, acting_user
) -> ChargeFlow:
    """Activate, deactivate or delete a flow (FLOW_TRANSITIONS). Deactivating keeps everything
    and can be undone; deleting moves to Deleting, and the purge finishes it."""
    _require(acting_user, "chargeflows.change_chargeflow", flow.space_id)
    if to_state not in FLOW_TRANSITIONS[flow.state] or to_state == ChargeFlow.State.DELETED:
        raise IllegalTransition(
            f"This flow is {flow.get_state_display()}: it cannot become {to_state} now."
        )
    with transaction.atomic():
        from_state = flow.state
        flow = _versioned_update(
            ChargeFlow,
            obj=flow,
            expected_version=expected_version,
            acting_user=acting_user,
            changes={"state": to_state},
        )
        _audit(
            flow=flow,
            actor=acting_user,
            action="flow_state",
            detail={"from": from_state, "to": to_state},
        )
    return flow


def level_configuration_update(
    *, configuration: ChargeFlowLevelConfiguration, expected_version: int, acting_user, **changes
) -> ChargeFlowLevelConfiguration:
    """Edit a level (optimistic locking). Running cases read the next level when they
    advance, so a change applies to them from their next level on."""
    _require(
        acting_user, "chargeflows.change_chargeflowlevelconfiguration", configuration.flow.space_id
    )
    if "flow" in changes and changes["flow"].pk != configuration.flow_id:
        raise InvalidInput("A level stays in its flow.", field="flow")
    with transaction.atomic():
        configuration = _versioned_update(
            ChargeFlowLevelConfiguration,
            obj=configuration,
            expected_version=expected_version,
            acting_user=acting_user,
            changes=changes,
        )
        _audit(
            flow=configuration.flow,
            actor=acting_user,
            action="level_changed",
            detail={"level": configuration.pk, **{k: str(v) for k, v in changes.items()}},
        )
    return configuration


def charge_flows_purge(*, now=None) -> int:
    """Beat: Deleting flows without running cases become Deleted; Deleted flows past their
    planned purge date are removed, unless finished cases still refer to them (those keep the
    row, Deleted, for their history)."""
    now = now or timezone.now()
    done = 0
    deleting = ChargeFlow.objects.filter(state=ChargeFlow.State.DELETING).exclude(
        cases__state=Case.State.RUNNING
    )
    for flow in deleting:
        with transaction.atomic():
            moved = ChargeFlow.objects.filter(pk=flow.pk, state=ChargeFlow.State.DELETING).update(
                state=ChargeFlow.State.DELETED, version=F("version") + 1
            )
            if moved:
                history_write(ChargeFlow, [flow.pk], reason="purge")
                _audit(flow=flow, action="flow_state", detail={"from": "deleting", "to": "deleted"})
                done += 1
    purgeable = ChargeFlow.objects.filter(
        state=ChargeFlow.State.DELETED, planned_purge_date__lte=now, cases__isnull=True
    )
    for flow in purgeable:
        flow.delete()
        done += 1
    return done


# --- Opening a case -----------------------------------------------------------------------------


def charge_flow_case_open(*, issue_id: int) -> ChargeFlowCase | None:
    """Open the collection of an issue that is collecting: the first applying flow (by
    priority) is stored on the case and never changes afterwards. Idempotent per issue."""
    now = timezone.now()
    outbound_ids: list = []
    with transaction.atomic():
        issue = (
            ChargeIssue.objects.select_for_update(of=("self",))
            .select_related("card", "space", "customer")
            .get(pk=issue_id)
        )
        if issue.state != ChargeIssue.State.COLLECTING:
            return None
        existing = ChargeFlowCase.objects.filter(issue=issue).first()
        if existing is not None:
            return existing
        flow = charge_flow_select(space_id=issue.space_id, facts=case_facts(issue))
        if flow is None:
            # Nothing applies (every flow inactive or conditioned away): the charge has failed.
            outbound_ids = billing_services.charge_issue_collection_finish(
                issue_id=issue.pk, to_state=ChargeIssue.State.FAILED, detail={"reason": "no_flow"}
            )
            _dispatch_on_commit(outbound_ids or [])
            transaction.on_commit(lambda: _outcome_emails(issue_id, succeeded=False))
            return None
        case = ChargeFlowCase.objects.create(
            space=issue.space, issue=issue, flow=flow, recipient_email=issue.customer_email
        )
        _audit(
            case=case,
            action="opened",
            detail={"flow": flow.pk, "flow_name": flow.name, "flow_version": flow.version},
        )
        configuration = level_configuration_next(flow_id=flow.pk, after=None)
        if configuration is None:
            outbound_ids += _case_fail(case, now, reason="the flow has no active level")
        else:
            outbound_ids += _level_start(case, configuration, position=1, start=now, now=now)
        _dispatch_on_commit(outbound_ids)
    return case


def charge_flow_cases_open_missing(*, now=None) -> int:
    """Sweep: issues collecting without a case (their signal was lost) get one."""
    now = now or timezone.now()
    ids = list(
        ChargeIssue.objects.filter(
            state=ChargeIssue.State.COLLECTING,
            flow_case__isnull=True,
            updated_at__lte=now - CASE_LOST_AFTER,
        ).values_list("pk", flat=True)[:200]
    )
    for issue_id in ids:
        charge_flow_case_open(issue_id=issue_id)
    return len(ids)


# --- Levels -------------------------------------------------------------------------------------


def _run_soon(level: ChargeFlowLevel, now, *, dispatch: bool = True) -> None:
    """Lease the level and dispatch its run on commit (the beat finds it if the message is
    lost: the lease ends)."""
    level.due_at = now
    level.claimed_until = now + LEASE
    if dispatch:
        _dispatch_run(level)


def _dispatch_run(level: ChargeFlowLevel) -> None:
    lease = level.claimed_until

    def send():
        from .tasks import flow_level_run

        # Read on commit: a new level is saved by then. Marked queued while its message waits;
        # if the broker is down the lease is released, so the next beat (within a minute)
        # sends the run instead of the level waiting out its lease.
        core_tasks.dispatch(
            flow_level_run,
            level.pk,
            lease.isoformat(),
            mark=ChargeFlowLevel.objects.filter(pk=level.pk, claimed_until=lease),
            release={"claimed_until": None},
        )

    transaction.on_commit(send)


def _level_start(case, configuration, *, position: int, start, now) -> list:
    """A new level of a case: retires the case's earlier links, tells the customer if the
    level says so, and runs its first step at once."""
    ChargeFlowLevelPaymentLink.objects.filter(
        level__case=case, used_at__isnull=True, retired_at__isnull=True
    ).update(retired_at=now)
    started_at, times_out_at = level_window(start=start, configuration=configuration)
    level = ChargeFlowLevel(
        case=case,
        configuration=configuration,
        position=position,
        started_at=started_at,
        times_out_at=times_out_at,
    )
    _run_soon(level, now, dispatch=False)
    level.save()
    _audit(
        case=case,
        action="level_started",
        detail={"level": level.pk, "position": position, "name": configuration.name},
    )
    if configuration.notify_customer:
        level_id = level.pk

        def notify():
            from .tasks import flow_level_notice_email

            core_tasks.dispatch(flow_level_notice_email, level_id)

        # Sent before the level's first step runs: the customer hears what comes next at
        # once (the notice itself is skipped if the case has ended by the time it is sent).
        transaction.on_commit(notify)
    _dispatch_run(level)
    return _outbound(
        case,
        "collection.level_started",
        {"level": position, "name": configuration.name, "times_out_at": times_out_at.isoformat()},
    )


def _case_fail(case, now, *, reason: str) -> list:
    _case_move(case, Case.State.FAILED, now)
    issue_events = billing_services.charge_issue_collection_finish(
        issue_id=case.issue_id,
        to_state=ChargeIssue.State.FAILED,
        detail={"case": case.pk, "reason": reason},
    )
    _audit(case=case, action="failed", detail={"reason": reason})
    issue_id = case.issue_id
    transaction.on_commit(lambda: _outcome_emails(issue_id, succeeded=False))
    return (issue_events or []) + _outbound(case, "collection.failed", {"reason": reason})


def _case_succeed(case, now, *, how: dict) -> list:
    _case_move(case, Case.State.SUCCEEDED, now)
    ChargeFlowLevelPaymentLink.objects.filter(
        level__case=case, used_at__isnull=True, retired_at__isnull=True
    ).update(retired_at=now)
    issue_events = billing_services.charge_issue_collection_finish(
        issue_id=case.issue_id,
        to_state=ChargeIssue.State.SUCCEEDED,
        detail={"case": case.pk, **how},
    )
    _audit(case=case, action="succeeded", detail=how)
    issue_id = case.issue_id
    transaction.on_commit(lambda: _outcome_emails(issue_id, succeeded=True))
    return (issue_events or []) + _outbound(case, "collection.succeeded", how)


def _outcome_emails(issue_id: int, *, succeeded: bool) -> None:
    # billing's receipt / failure notices (customer and staff), each its own task.
    billing_services.charge_issue_outcome_emails_dispatch(issue_id=issue_id, succeeded=succeeded)


def _note(level, step: str, **detail) -> None:
    level.failures = [*level.failures, {"step": step, **detail}]


def _level_advance(level: ChargeFlowLevel, now) -> tuple[str | None, list]:
    """Walk the level's steps from where it stands to the next one that has work: a charge
    (returned, to run after commit) or waiting for the end of the period."""
    configuration = level.configuration
    today = now.date()
    outbound_ids: list = []
    step = level.step
    while True:
        if step in (Step.TOKEN, Step.METHOD):
            wanted = (
                configuration.run_token_charge
                if step == Step.TOKEN
                else configuration.run_saved_method
            )
            if wanted and level_payment_method(level=level, step=step, today=today) is not None:
                level.step = step
                # The run claims the charge in this same transaction (flow_level_run), which
                # clears the lease; it stays only should that claim refuse the level.
                _run_soon(level, now, dispatch=False)
                level.save(update_fields=["step", "due_at", "claimed_until", "failures"])
                return step, outbound_ids
            if wanted:
                _note(level, step, code="skipped", at=now.isoformat())
            step = Step.METHOD if step == Step.TOKEN else Step.LINK
        elif step == Step.LINK:
            if configuration.run_payment_link:
                outbound_ids += _link_send(level, now)
            step = Step.WAITING
        else:
            level.step = Step.WAITING
            level.due_at = level.times_out_at
            level.claimed_until = None
            level.save(update_fields=["step", "due_at", "claimed_until", "failures"])
            return None, outbound_ids


def _link_send(level: ChargeFlowLevel, now) -> list:
    """The level's payment link: expires with its level; any older link of the case is
    retired. Delivered by email, or by a signed outbound event for another system."""
    ChargeFlowLevelPaymentLink.objects.filter(
        level__case=level.case, used_at__isnull=True, retired_at__isnull=True
    ).exclude(level=level).update(retired_at=now)
    link, _ = ChargeFlowLevelPaymentLink.objects.get_or_create(
        level=level, defaults={"expires_at": level.times_out_at, "sent_at": now}
    )
    _audit(case=level.case, action="link_sent", detail={"level": level.pk, "link": link.pk})
    data = {"level": level.position, "expires_at": link.expires_at.isoformat()}
    delivery = level.configuration.link_delivery
    if delivery == ChargeFlowLevelConfiguration.LinkDelivery.OUTBOUND_EVENT:
        # The other system delivers it: the URL is in the signed event.
        data["url"] = payment_link_url(link)
    else:
        link_id = link.pk

        def send():
            from .tasks import payment_link_email

            core_tasks.dispatch(payment_link_email, link_id)

        transaction.on_commit(send)
    return _outbound(level.case, "collection.link_sent", data)


def _level_time_out(level: ChargeFlowLevel, now) -> list:
    """The period ended unpaid: the level fails and the next one (read now, so a reordered
    flow applies) starts exactly when this one's period ended; after the last, the case fails."""
    level.state = Level.State.FAILED
    level.step = Step.DONE
    level.due_at = level.claimed_until = None
    level.finished_at = now
    _note(level, "period", code="timed_out", at=now.isoformat())
    level.save(
        update_fields=["state", "step", "due_at", "claimed_until", "finished_at", "failures"]
    )
    case = level.case
    _audit(case=case, action="level_failed", detail={"level": level.pk, "position": level.position})
    following = level_configuration_next(flow_id=case.flow_id, after=level.configuration)
    if following is None:
        return _case_fail(case, now, reason="every level ran without payment")
    return _level_start(
        case, following, position=level.position + 1, start=level.times_out_at, now=now
    )


def _link_payment_under_way(level: ChargeFlowLevel) -> bool:
    return ChargeAttempt.objects.filter(
        payment_link__level=level, status__in=UNSETTLED_ATTEMPT_STATUSES
    ).exists()


def flow_level_run(*, level_id: int, lease: str | None = None) -> ChargeAttempt | None:
    """Do what a level has due: its next step, or its time-out. With a lease (from a claim or
    _run_soon) only while the row still holds that lease; without, only when due.

    A charge is claimed in this same transaction: payments' begin moves the level to its
    charging step and writes the attempt under the run's locks, and the provider is called
    after commit. So of two copies of one message, the one holding the lock is the one that
    charges, and the other then finds the lease spent. The run waits for the level's locks
    rather than skipping them (chargeflows/locks.py): a copy that skipped a level held by a
    duplicate, or by a staff action, would leave it to wait out its lease."""
    now = timezone.now()
    attempt = None
    with transaction.atomic():
        level = level_locked(level_id, state=Level.State.PENDING, due_at__isnull=False)
        if level is None or level.case.state != Case.State.RUNNING:
            return None
        if lease is not None:
            if level.claimed_until != datetime.fromisoformat(lease):
                return None  # not (or no longer) this message's lease
        elif level.due_at > now or (level.claimed_until and level.claimed_until > now):
            return None
        if now >= level.times_out_at:
            if _link_payment_under_way(level):
                # The customer is paying on the page right now (3-D Secure, say): the level
                # ends once that settles, so the next level never charges a paid case.
                level.due_at = now + LINK_PAYMENT_WAIT
                level.save(update_fields=["due_at"])
                return None
            _dispatch_on_commit(_level_time_out(level, now))
            return None
        charge, outbound_ids = _level_advance(level, now)
        _dispatch_on_commit(outbound_ids)
        if charge is not None:
            attempt = attempts.attempt_begin(owner=CHARGES[charge], owner_id=level_id)
    if attempt is None:
        return None
    # Committed: the attempt and its idempotency key exist before the provider is called.
    return attempts.attempt_execute(attempt=attempt)


# The UPDATE finds the locked rows again by their physical address (ctid), not by id: a lookup
# by id descends the primary key once per row, and with many waiting levels those 1,000 random
# ids sit on as many different index pages, the cost that grew with the table
# (bench/due_levels.py). The locked version is the one the join finds: a row updated and
# committed by someone else after this statement's snapshot has a ctid the snapshot cannot
# see, so it is left unclaimed (the next beat takes it), never claimed twice.
#
# A level whose run message is still queued and untaken (queued_at, cleared by the run when it
# takes the message) is not claimed again when its lease ends, only once the broker must have
# lost that message (core.tasks.requeue_after): stopped workers leave one message per level.
CLAIM_SQL = """
UPDATE {level} SET claimed_until = %(lease)s, queued_at = %(now)s
FROM (
    SELECT ctid FROM {level}
    WHERE state = %(pending)s AND due_at IS NOT NULL AND due_at <= %(now)s
      AND (claimed_until IS NULL OR claimed_until <= %(now)s)
      AND (queued_at IS NULL OR queued_at <= %(requeue_before)s)
    ORDER BY due_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) due
WHERE {level}.ctid = due.ctid
RETURNING {level}.id
"""


def flow_levels_claim(*, now=None, limit: int = CLAIM_BATCH) -> list[tuple[int, str]]:
    """Claim up to `limit` due levels: lock them (skipping rows another claim holds) and lease
    them, in one statement. Returns (level id, lease) pairs to dispatch.

    One statement rather than SELECT then UPDATE: half the round trips, and the rows are
    found once (the partial index flow_level_due keeps the search independent of how many
    levels wait)."""
    from django.db import connection

    now = now or timezone.now()
    lease = now + LEASE
    requeue_before = now - requeue_after()
    if connection.vendor != "postgresql":
        # SQLite (the local run) has no row locks to skip; its one writer at a time serialises
        # claims anyway.
        with transaction.atomic():
            due = ChargeFlowLevel.objects.filter(
                Q(claimed_until__isnull=True) | Q(claimed_until__lte=now),
                Q(queued_at__isnull=True) | Q(queued_at__lte=requeue_before),
                state=Level.State.PENDING,
                due_at__isnull=False,
                due_at__lte=now,
            ).order_by("due_at")
            ids = list(due.values_list("pk", flat=True)[:limit])
            ChargeFlowLevel.objects.filter(pk__in=ids).update(claimed_until=lease, queued_at=now)
        return [(level_id, lease.isoformat()) for level_id in ids]
    with transaction.atomic(), connection.cursor() as cursor:
        # The lease is soft state: were this commit lost in a database crash, the runs
        # dispatched with it find no matching lease and do nothing, and the next beat claims
        # the levels again. So the commit need not wait for its WAL flush.
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute(
            CLAIM_SQL.format(level=connection.ops.quote_name(ChargeFlowLevel._meta.db_table)),
            {
                "lease": lease,
                "pending": Level.State.PENDING,
                "now": now,
                "requeue_before": requeue_before,
                "limit": limit,
            },
        )
        ids = [row[0] for row in cursor.fetchall()]
    return [(level_id, lease.isoformat()) for level_id in ids]


def flow_levels_due_dispatch() -> int:
    """Beat, every minute: claim due levels in batches and dispatch a run for each; and open
    the cases whose signal was lost. Takes no further batch after the task deadline (the next
    beat goes on), and stops at a broker outage, releasing what it could not send."""
    from core.tasks import BROKER_ERRORS

    from .tasks import flow_level_run as run_task

    deadline = Deadline()
    charge_flow_cases_open_missing()
    total = 0
    while True:
        claimed = flow_levels_claim(limit=CLAIM_BATCH)
        for sent, (level_id, lease) in enumerate(claimed):
            try:
                run_task.delay(level_id, lease)
            except BROKER_ERRORS as exc:
                logger.error(
                    "level dispatch stopped after %s of %s: the broker is unavailable (%s)",
                    sent,
                    len(claimed),
                    exc.__class__.__name__,
                )
                flow_levels_release(claimed=claimed[sent:])
                return total + sent
        total += len(claimed)
        if len(claimed) < CLAIM_BATCH or deadline.passed():
            return total


def flow_levels_release(*, claimed: list[tuple[int, str]]) -> int:
    """Give back claimed levels whose run was never sent, so the next beat claims them again
    at once rather than after their lease."""
    released = 0
    for lease in {lease for _, lease in claimed}:  # one lease per claimed batch
        released += ChargeFlowLevel.objects.filter(
            pk__in=[level_id for level_id, its in claimed if its == lease],
            claimed_until=datetime.fromisoformat(lease),
        ).update(claimed_until=None, queued_at=None)
    return released


def flow_level_run_taken(*, level_id: int, lease: str | None) -> None:
    """A run's message has been taken by a worker: the level is no longer queued, so once the
    run's lease ends (a worker that died mid-run) the beat sends it again. Only the message of
    the current lease clears it (a stale copy leaves the queued one counted)."""
    taken = ChargeFlowLevel.objects.filter(pk=level_id, queued_at__isnull=False)
    if lease is not None:
        taken = taken.filter(claimed_until=datetime.fromisoformat(lease))
    taken.update(queued_at=None)


def level_charge_settled(*, attempt: ChargeAttempt, outbound_id: uuid.UUID, now) -> list:
    """A level's charge has its final outcome (inside payments' record transaction): success
    completes the case and its issue; a failure moves on to the level's next step."""
    # The attempt is locked by payments' record already; the collection's rows come after it.
    level = level_locked(attempt.flow_level_id)
    succeeded = attempt.status == ChargeAttempt.Status.SUCCEEDED
    step = Step.TOKEN if level.step == Step.TOKEN_CHARGING else Step.METHOD
    detail = {"attempt": attempt.pk, "at": now.isoformat()}
    if not succeeded:
        detail.update(
            code=attempt.decline_code or attempt.failure_code,
            message=attempt.failure_message,
            hard=attempt.hard_decline,
        )
    if not succeeded:
        _note(level, step, **detail)
    if level.state != Level.State.PENDING or level.case.state != Case.State.RUNNING:
        # The case was cancelled while the charge ran: keep the record, staff see it.
        level.save(update_fields=["failures"])
        logger.warning("level %s settled %s after its case ended", level.pk, attempt.status)
        return []
    if succeeded:
        level.state = Level.State.SUCCESSFUL
        level.step = Step.DONE
        level.due_at = level.claimed_until = None
        level.finished_at = now
        level.save(
            update_fields=["state", "step", "due_at", "claimed_until", "finished_at", "failures"]
        )
        return _case_succeed(
            level.case, now, how={"level": level.position, "step": step, "attempt": attempt.pk}
        )
    level.step = Step.METHOD if step == Step.TOKEN else Step.LINK
    _run_soon(level, now)
    level.save(update_fields=["step", "due_at", "claimed_until", "failures"])
    return []


# --- Staff actions ------------------------------------------------------------------------------


def _case_locked(case: ChargeFlowCase) -> ChargeFlowCase:
    # Issue, then case (chargeflows/locks.py); the level and links are locked after it.
    return case_locked(case.pk)


def case_level_start_next_now(*, case: ChargeFlowCase, acting_user) -> ChargeFlowCase:
    """Staff: end the current level now and start the next one (or fail the case after the
    last), as if the period had ended."""
    _require(acting_user, "chargeflows.change_chargeflowcase", case.space_id)
    now = timezone.now()
    with transaction.atomic():
        case = _case_locked(case)
        if case.state != Case.State.RUNNING:
            raise IllegalTransition("This collection has ended.")
        level = (
            ChargeFlowLevel.objects.select_for_update(of=("self",))
            .select_related("configuration", "case__issue", "case__space")
            .filter(case=case, state=Level.State.PENDING)
            .first()
        )
        if level is None or level.due_at is None or _link_payment_under_way(level):
            raise IllegalTransition("A charge of this level is under way; try again shortly.")
        _audit(case=case, actor=acting_user, action="next_level_now", detail={"level": level.pk})
        level.times_out_at = now
        _dispatch_on_commit(_level_time_out(level, now))
    return case


def case_cancel(*, case: ChargeFlowCase, acting_user, comment: str = "") -> ChargeFlowCase:
    """Staff: stop collecting. The issue is cancelled; open links stop working."""
    _require(acting_user, "chargeflows.change_chargeflowcase", case.space_id)
    now = timezone.now()
    with transaction.atomic():
        case = _case_locked(case)
        under_way = ChargeAttempt.objects.filter(
            Q(flow_level__case=case) | Q(payment_link__level__case=case),
            status__in=UNSETTLED_ATTEMPT_STATUSES,
        )
        if under_way.exists():
            raise IllegalTransition("A charge of this collection is under way; try again shortly.")
        _case_move(case, Case.State.CANCELLED, now)
        ChargeFlowLevel.objects.filter(case=case, state=Level.State.PENDING).update(
            state=Level.State.FAILED,
            step=Step.DONE,
            due_at=None,
            claimed_until=None,
            finished_at=now,
        )
        ChargeFlowLevelPaymentLink.objects.filter(
            level__case=case, used_at__isnull=True, retired_at__isnull=True
        ).update(retired_at=now)
        issue_events = billing_services.charge_issue_collection_finish(
            issue_id=case.issue_id,
            to_state=ChargeIssue.State.CANCELLED,
            acting_user=acting_user,
            detail={"case": case.pk, "comment": comment},
        )
        _dispatch_on_commit(issue_events or [])
        _audit(case=case, actor=acting_user, action="cancelled", detail={"comment": comment})
    return case


def case_recipient_change(*, case: ChargeFlowCase, email: str, acting_user) -> ChargeFlowCase:
    """Staff: send the collection's emails to another address from now on."""
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    _require(acting_user, "chargeflows.change_chargeflowcase", case.space_id)
    try:
        validate_email(email)
    except ValidationError as exc:
        raise InvalidInput("Enter a valid email address.", field="email") from exc
    with transaction.atomic():
        case = _case_locked(case)
        old = case.recipient_email
        case.recipient_email = email
        case.save(update_fields=["recipient_email"])
        _audit(
            case=case,
            actor=acting_user,
            action="recipient_changed",
            detail={"from": old, "to": email},
        )
    return case


def case_payment_link_url(*, case: ChargeFlowCase, acting_user) -> str:
    """Staff: the current payment page URL (to give the customer by phone); audited."""
    _require(acting_user, "chargeflows.view_chargeflowcase", case.space_id)
    link = (
        ChargeFlowLevelPaymentLink.objects.filter(
            level__case=case, used_at__isnull=True, retired_at__isnull=True
        )
        .order_by("-created_at")
        .first()
    )
    if link is None or link.expires_at <= timezone.now():
        raise InvalidInput("This collection has no open payment link.")
    _audit(case=case, actor=acting_user, action="link_copied", detail={"link": link.pk})
    return payment_link_url(link)


def case_preview(*, case: ChargeFlowCase) -> list[dict]:
    """The coming levels with their dates: a dry run of the rules the runner applies
    (level_window, level_configuration_next), writing nothing."""
    current = case.levels.filter(state=Level.State.PENDING).select_related("configuration").first()
    if case.state != Case.State.RUNNING or current is None:
        return []
    coming, after, start = [], current.configuration, current.times_out_at
    position = current.position
    while True:
        following = level_configuration_next(flow_id=case.flow_id, after=after)
        if following is None:
            return coming
        position += 1
        starts, ends = level_window(start=start, configuration=following)
        coming.append(
            {
                "position": position,
                "name": following.name,
                "starts_at": starts,
                "times_out_at": ends,
                "token": following.run_token_charge,
                "saved_method": following.run_saved_method,
                "link": following.run_payment_link,
            }
        )
        after, start = following, ends


# --- Payment links ------------------------------------------------------------------------------


def payment_link_check(*, token: str) -> ChargeFlowLevelPaymentLink:
    """The link a customer's token stands for, if it may still be used; else LinkRefused with
    a message for the customer (tampered, paid, replaced, expired), in the customer's language
    when the link is genuine (error.language)."""
    from django.utils import translation
    from django.utils.translation import gettext as _

    from .exceptions import LinkRefused
    from .tokens import link_token_read

    read = link_token_read(token)
    link = None
    if read is not None:
        link = (
            ChargeFlowLevelPaymentLink.objects.select_related(
                "level__case__issue__customer", "level__case__space"
            )
            .filter(pk=read[0])
            .first()
        )
    if link is None:
        raise LinkRefused(_("This payment link is not valid."), code="link_invalid")
    language = link.level.case.issue.customer.preferred_language or "en"
    with translation.override(language):
        try:
            _link_usable(link, read[1])
        except LinkRefused as error:
            error.language = language
            raise
    return link


def _link_usable(link, state_hash: str) -> None:
    from django.utils.translation import gettext as _

    from .exceptions import LinkRefused
    from .tokens import link_token_matches

    if link.used_at is not None:
        raise LinkRefused(_("This payment has already been made. Thank you."), code="link_used")
    # The signature is genuine, so the link's own state may be told before the state hash
    # (which no longer matches once the link was used or retired) refuses it.
    if link.retired_at is not None:
        raise LinkRefused(
            _("This link was replaced by a newer one; please use the link in our latest email."),
            code="link_retired",
        )
    if not link_token_matches(link, state_hash):
        raise LinkRefused(_("This payment link is not valid."), code="link_invalid")
    # A payment under way (a debit the bank is processing, a charge whose outcome is not in
    # yet) keeps its link readable past the expiry (the level waits for it too): the customer
    # sees "being processed", then the receipt, not "expired, pay another way".
    expired = link.expires_at <= timezone.now() and not payment_link_waiting(
        link=link, attempt=payment_link_attempt(link=link)
    )
    if expired or link.level.case.state != Case.State.RUNNING:
        raise LinkRefused(
            _("This payment link has expired. Please contact %(merchant)s to pay.")
            % {"merchant": link.level.case.space.name},
            code="link_expired",
        )


PAYMENT_METHOD_TYPES = ("card", "sepa_debit")


def payment_link_setup_intent(
    *, link: ChargeFlowLevelPaymentLink, payment_method_type: str = "card"
) -> str:
    """A SetupIntent the page's Stripe.js confirms with the customer's new card (with 3-D
    Secure when the card asks) or SEPA Direct Debit account (confirmSepaDebitSetup, which also
    records the mandate); its client secret. Tied to the link by its metadata."""
    from payments import gateway

    from .exceptions import LinkRefused

    if payment_method_type not in PAYMENT_METHOD_TYPES:
        raise InvalidInput("Unknown payment method.", field="payment_method_type")
    try:
        intent = gateway.setup_intent_create(
            metadata={"payment_link": str(link.pk), "space": str(link.level.case.space_id)},
            payment_method_type=payment_method_type,
        )
    except gateway.ProviderError as exc:
        raise LinkRefused(
            gettext("Payments are unavailable for a moment. Please try again."),
            code="provider_down",
        ) from exc
    return intent.client_secret


def payment_link_pay(
    *, link: ChargeFlowLevelPaymentLink, setup_intent_id: str, keep_method: bool = False
) -> ChargeAttempt | None:
    """Charge the approved amount to the card or SEPA Direct Debit account the customer
    confirmed on the page, once per link: a reload, a second tab or a double click finds the
    link's one attempt. A debit may end `processing`: the link then waits for the provider's
    webhook or the reconciler (payment_link_settled). With keep_method the method is kept for
    future charges once the payment succeeds.

    Two tabs (or windows) paying one link with two methods: the first method confirmed becomes
    the link's, and only it is attached to the customer and charged. A later submission joins
    that payment (payment_link_waiting tells its page to wait for it); its own method is never
    attached, or, when it lost the race after attaching, is detached again. None: another
    submission holds the link while it begins the charge."""
    from payments import gateway

    from .exceptions import LinkRefused

    existing = ChargeAttempt.objects.filter(payment_link=link).first()
    if existing is not None:
        # A reload, a second tab, or the page back from 3-D Secure: the same attempt, read
        # again at the provider if it waited for the customer.
        if existing.status == ChargeAttempt.Status.PROCESSING:
            try:
                attempts.attempt_refresh(attempt=existing)
            except gateway.ProviderError as exc:
                raise LinkRefused(
                    gettext("Your payment could not be checked. Please try again.")
                ) from exc
            existing.refresh_from_db()
        return existing
    try:
        intent = gateway.setup_intent_retrieve(setup_intent_id)
    except gateway.ProviderError as exc:
        raise LinkRefused(gettext("Your card could not be checked. Please try again.")) from exc
    if (
        intent.metadata.get("payment_link") != str(link.pk)
        or intent.status != "succeeded"
        or not intent.payment_method_id
    ):
        raise InvalidInput(gettext("Your card could not be confirmed. Please try again."))
    method_id = intent.payment_method_id
    link.refresh_from_db(fields=["provider_payment_method_id"])
    if link.provider_payment_method_id and link.provider_payment_method_id != method_id:
        # Another tab's method is the link's already (attached before it was chosen): join
        # its payment. Charging here too is harmless: the link's one attempt is begun once,
        # by whichever request gets there first (a request that died after choosing its
        # method would otherwise leave the link stuck).
        return _payment_link_charge(link)
    issue = link.level.case.issue
    try:
        # The method's kind from the provider (a SetupIntent's declared types do not bind
        # what the browser confirmed it with); None: not a SEPA account, so a card.
        sepa = gateway.sepa_debit_retrieve(method_id)
        # Attached before it is chosen (below), so the method a link names is always one
        # the customer holds at the provider, whichever request then begins its charge.
        gateway.payment_method_attach(
            payment_method_id=method_id, customer_id=issue.provider_customer_id
        )
    except gateway.ProviderError as exc:
        raise LinkRefused(gettext("Your card could not be saved. Please try again.")) from exc
    with transaction.atomic():
        locked = ChargeFlowLevelPaymentLink.objects.select_for_update().get(pk=link.pk)
        # The first confirmed method is the link's (a second tab's is not charged).
        if not locked.provider_payment_method_id:
            locked.provider_payment_method_id = method_id
            locked.payment_method_type = "card" if sepa is None else "sepa_debit"
            locked.provider_setup_intent_id = intent.id
            locked.keep_method = keep_method
            locked.save(
                update_fields=[
                    "provider_payment_method_id",
                    "payment_method_type",
                    "provider_setup_intent_id",
                    "keep_method",
                ]
            )
        chosen = locked.provider_payment_method_id
    if chosen != method_id:
        # Another tab chose its method between our check above and our lock: ours is not
        # used, so it does not stay on the customer. Best effort: the payment goes on anyway.
        try:
            gateway.payment_method_detach(method_id)
        except gateway.ProviderError as exc:
            logger.warning(
                "payment link %s: unused method not detached (%s)",
                link.pk,
                exc.__class__.__name__,
            )
    return _payment_link_charge(link)


def _payment_link_charge(link: ChargeFlowLevelPaymentLink) -> ChargeAttempt | None:
    attempt = attempts.attempt_charge(owner=PAYMENT_LINK_CHARGE, owner_id=link.pk)
    return attempt or ChargeAttempt.objects.filter(payment_link=link).first()


def payment_link_settled(*, attempt: ChargeAttempt, now) -> list:
    """The page's charge has its outcome (inside payments' record transaction). Paid: the
    link is used, its level and the case succeed, and the issue with them. Declined: the case
    goes on by its own levels and clocks (a page attempt never advances or exhausts it)."""
    # The attempt is locked by payments' record already; the collection's rows come after it.
    link = link_locked(attempt.payment_link_id)
    link.provider_payment_intent_id = attempt.provider_payment_intent_id
    if attempt.status != ChargeAttempt.Status.SUCCEEDED:
        link.save(update_fields=["provider_payment_intent_id"])
        _audit(case=link.level.case, action="link_payment_failed", detail={"attempt": attempt.pk})
        return []
    link.used_at = now
    link.save(update_fields=["provider_payment_intent_id", "used_at"])
    if link.keep_method:
        link_id = link.pk
        transaction.on_commit(lambda: _method_keep_later(link_id))
    level = link.level
    case = level.case
    if level.state != Level.State.PENDING or case.state != Case.State.RUNNING:
        logger.warning("payment link %s paid after its case ended", link.pk)
        return []
    level.state = Level.State.SUCCESSFUL
    level.step = Step.DONE
    level.due_at = level.claimed_until = None
    level.finished_at = now
    level.save(update_fields=["state", "step", "due_at", "claimed_until", "finished_at"])
    return _case_succeed(case, now, how={"level": level.position, "step": "link",
                                         "attempt": attempt.pk})  # fmt: skip


def _method_keep_later(link_id: int) -> None:
    from .tasks import payment_link_method_keep

    core_tasks.dispatch(payment_link_method_keep, link_id)


def payment_link_authentication_secret(*, attempt: ChargeAttempt) -> str | None:
    """The client secret the page's Stripe.js needs when the card asks for 3-D Secure, else
    None (the attempt is settled, is a SEPA debit the bank is processing, or waits for
    nothing the customer can do)."""
    from payments import gateway

    if attempt.status != ChargeAttempt.Status.PROCESSING or not attempt.provider_payment_intent_id:
        return None
    if payment_link_debit_processing(attempt=attempt):
        return None
    return gateway.payment_intent_client_secret(attempt.provider_payment_intent_id) or None


def payment_link_waiting(
    *, link: ChargeFlowLevelPaymentLink, attempt: ChargeAttempt | None, submitted: bool = False
) -> str | None:
    """What the customer on the link's page waits for while its payment has no outcome and
    there is nothing for them to do: "debit", a SEPA debit the bank is processing (days; the
    webhook or the reconciler settles it); "payment", a charge begun by this or another tab
    whose provider call is in flight or whose outcome the reconciler is finding out (seconds,
    at most minutes); None otherwise (paid, declined, 3-D Secure to complete, nothing begun).
    `submitted`: the page was just submitted and found no attempt while the link has a method,
    so another submission holds the link while it begins the charge."""
    if link.used_at is not None:
        return None
    if attempt is None:
        return "payment" if submitted and link.provider_payment_method_id else None
    if payment_link_debit_processing(attempt=attempt):
        return "debit"
    if attempt.status in (ChargeAttempt.Status.PENDING, ChargeAttempt.Status.UNKNOWN):
        return "payment"
    return None


def payment_link_debit_processing(*, attempt: ChargeAttempt | None) -> bool:
    """Whether the link's payment is a SEPA debit still processing at the bank: the customer
    can only wait; the webhook or the reconciler settles it."""
    return (
        attempt is not None
        and attempt.status == ChargeAttempt.Status.PROCESSING
        and attempt.payment_link is not None
        and attempt.payment_link.payment_method_type == "sepa_debit"
    )


def payment_link_method_keep(*, link_id: int) -> None:
    """The customer asked to keep the card or SEPA account they paid the link with: a card
    becomes their default card, an account their saved SEPA method. Runs after the payment
    succeeded (a task dispatched on its commit, since it calls the provider); a failure here
    never undoes the payment."""
    from cards import services as card_services
    from cards.exceptions import CardsError
    from payments import gateway

    link = (
        ChargeFlowLevelPaymentLink.objects.select_related("level__case__issue__customer")
        .filter(pk=link_id, keep_method=True, used_at__isnull=False)
        .exclude(provider_payment_method_id="")
        .first()
    )
    if link is None:
        return
    customer = link.level.case.issue.customer
    via = f"payment link {link.pk}"
    try:
        if link.payment_method_type == "sepa_debit":
            card_services.sepa_debit_method_keep(
                customer=customer,
                payment_method_id=link.provider_payment_method_id,
                setup_intent_id=link.provider_setup_intent_id,
                via=via,
            )
        else:
            card_services.payment_card_keep(
                customer=customer, payment_method_id=link.provider_payment_method_id, via=via
            )
    except (CardsError, gateway.ProviderError) as exc:
        logger.warning("payment link %s: method not kept (%s)", link.pk, exc.__class__.__name__)
