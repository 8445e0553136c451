"""Recurring (auto-ship) lines: create, edit, pause, resume, cancel; the token side (lines
follow their card by lookup key); the fallback scan; missing-card reminders; generations."""

import logging
import re
from datetime import date, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from billing import services as billing_services
from billing.exceptions import BillingError
from cards import services as card_services
from cards.models import Customer, PaymentCard
from core import money
from core.history import history_write
from core.tasks import Deadline, dispatch
from spaces.models import Space
from spaces.selectors import user_may_act_in_space

from .exceptions import IllegalTransition, InvalidInput, NotAllowed
from .models import TRANSITIONS, RecurringEvent, RecurringLine, RecurringSettings
from .schedule import ScheduleError, cron_parse, next_charge_date

logger = logging.getLogger(__name__)
Status = RecurringLine.Status
Interval = RecurringLine.Interval
ACTIVE_CARD = PaymentCard.Status.ACTIVE

# Seed 003's key: CUSTOMER_ID-BRAND-LAST_FOUR-MM/YY (the brand may contain spaces or dashes).
LOOKUP_KEY_FORMAT = re.compile(r"^\S.*-.+-\d{4}-(0[1-9]|1[0-2])/\d{2}$")
# A first charge date further ahead than this is almost always a typo in the year.
MAX_FIRST_CHARGE_AHEAD = timedelta(days=366)


# --- Audit and state machine ------------------------------------------------------------------


def _audit(line, *, actor, action, from_status="", detail=None) -> RecurringEvent:
    return RecurringEvent.objects.create(
        space_id=line.space_id,
        line=line,
        action=action,
        from_status=from_status,
        to_status=line.status,
        actor=actor,
        detail=detail or {},
    )


def _transition(line, to_status, *, actor, action, detail=None) -> RecurringEvent:
    """Move a line along TRANSITIONS and write the audit event in the same transaction."""
    if to_status not in TRANSITIONS[line.status]:
        raise IllegalTransition(
            f"This line is {line.get_status_display().lower()}: it cannot be "
            f"{Status(to_status).label.lower()} now.",
            code="illegal_transition",
        )
    from_status = line.status
    line.status = to_status
    _history_by(line, actor, detail)
    line.save()
    return _audit(line, actor=actor, action=action, from_status=from_status, detail=detail)


def _history_by(line, actor, via: dict | None) -> None:
    """The line's next history row names the acting user, or the API key that acted."""
    if actor is not None:
        line._history_user = actor
    if via and via.get("api_key_prefix"):
        line._change_reason = f"API key {via['api_key_prefix']}"


def _require(acting_user, permission: str, space_id: int) -> None:
    # None: the system or an API key (authenticated for its space by the API) acts.
    if acting_user is not None and not user_may_act_in_space(
        user=acting_user, permission=permission, space_id=space_id
    ):
        raise NotAllowed()


def _locked(line: RecurringLine) -> RecurringLine:
    return RecurringLine.objects.select_for_update(of=("self",)).get(pk=line.pk)


# --- Validation -------------------------------------------------------------------------------


def _checked_amount(amount_minor, currency: str, space: Space) -> tuple[int, str]:
    currency = (currency or space.default_currency).upper()
    if currency not in money.CURRENCIES:
        raise InvalidInput(f"{currency} is not a currency we charge in.", field="currency")
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
        raise InvalidInput("Give the amount in minor units, e.g. 4990.", field="amount")
    try:
        money.check_amount(amount_minor, currency, maximum=space.max_charge_for(currency))
    except money.MoneyError as exc:
        raise InvalidInput(str(exc), field="amount") from exc
    return amount_minor, currency


def _checked_schedule(interval: str, cron: str) -> tuple[str, str]:
    if interval not in Interval.values:
        raise InvalidInput(
            f"Choose one of: {', '.join(Interval.values)}.", field="interval", code="invalid"
        )
    cron = (cron or "").strip()
    if interval != Interval.CRON:
        if cron:
            raise InvalidInput("A schedule rule needs the interval 'cron'.", field="cron")
        return interval, ""
    try:
        cron_parse(cron)
        next_charge_date(timezone.localdate(), interval=interval, cron=cron)
    except ScheduleError as exc:
        raise InvalidInput(str(exc), field="cron") from exc
    return interval, cron


def _checked_charge_date(charge_date) -> date:
    today = timezone.localdate()
    if not isinstance(charge_date, date):
        raise InvalidInput("Give the next charge date as YYYY-MM-DD.", field="charge_date")
    if charge_date < today:
        raise InvalidInput("The next charge date is in the past.", field="charge_date")
    if charge_date > today + MAX_FIRST_CHARGE_AHEAD:
        raise InvalidInput(
            "The next charge date is more than a year ahead. Enter a date within the next year.",
            field="charge_date",
        )
    return charge_date


def _checked_card(card: PaymentCard | None, customer: Customer) -> PaymentCard | None:
    if card is None:
        return None
    if card.customer_id != customer.pk or card.space_id != customer.space_id:
        raise InvalidInput("This card belongs to another customer.", field="card")
    if card.status != ACTIVE_CARD:
        raise InvalidInput("This card is not active; choose an active card.", field="card")
    return card


def _checked_key(key: str) -> str:
    key = (key or "").strip()
    if key and (len(key) > 120 or not LOOKUP_KEY_FORMAT.match(key)):
        raise InvalidInput(
            "Write the card lookup key as CUSTOMER_ID-BRAND-LAST_FOUR-MM/YY, e.g. "
            "0283759-Mastercard-4242-06/25.",
            field="card_lookup_key",
        )
    return key


def _matching_card(customer_id: int, key: str) -> PaymentCard | None:
    """The customer's newest active card with this lookup key."""
    if not key:
        return None
    return (
        PaymentCard.objects.filter(customer_id=customer_id, lookup_key=key, status=ACTIVE_CARD)
        .order_by("-created_at", "-pk")
        .first()
    )


def _card_fields(*, customer, card, card_lookup_key) -> tuple[PaymentCard | None, str]:
    """The web side of seed 003: a chosen card writes its key on the line; a key alone is kept
    and filled by the customer's matching active card, now or when one is registered."""
    card = _checked_card(card, customer)
    if card is not None:
        return card, card.lookup_key
    key = _checked_key(card_lookup_key)
    if not key:
        raise InvalidInput("Choose a card, or give its lookup key.", field="card")
    return _matching_card(customer.pk, key), key


def recurring_line_check(
    *,
    customer: Customer,
    amount_minor,
    currency: str,
    charge_date,
    interval: str,
    cron: str = "",
    card: PaymentCard | None = None,
    card_lookup_key: str = "",
) -> None:
    """What recurring_line_create would refuse, as InvalidInput with its field, changing
    nothing: forms call it to show every error before anything is saved."""
    _checked_amount(amount_minor, currency, customer.space)
    _checked_schedule(interval, cron)
    _checked_charge_date(charge_date)
    _card_fields(customer=customer, card=card, card_lookup_key=card_lookup_key)


# --- Web side: create, edit, pause, resume, cancel --------------------------------------------


def recurring_line_create(
    *,
    customer: Customer,
    amount_minor: int,
    currency: str = "",
    charge_date: date,
    interval: str = Interval.MONTHLY,
    cron: str = "",
    card: PaymentCard | None = None,
    card_lookup_key: str = "",
    description: str = "",
    acting_user=None,
    via: dict | None = None,
) -> RecurringLine:
    """A new line in its customer's space. With a card, the card's lookup key is saved on the
    line; with a key only, the customer's matching active card fills it (now or later)."""
    _require(acting_user, "recurring.add_recurringline", customer.space_id)
    amount_minor, currency = _checked_amount(amount_minor, currency, customer.space)
    interval, cron = _checked_schedule(interval, cron)
    charge_date = _checked_charge_date(charge_date)
    with transaction.atomic():
        card, key = _card_fields(customer=customer, card=card, card_lookup_key=card_lookup_key)
        line = RecurringLine(
            space_id=customer.space_id,
            customer=customer,
            description=description,
            amount_minor=amount_minor,
            currency=currency,
            interval=interval,
            cron=cron,
            charge_date=charge_date,
            card=card,
            card_lookup_key=key,
            created_by=acting_user,
        )
        _history_by(line, acting_user, via)
        line.save(force_insert=True)
        _audit(line, actor=acting_user, action="created", detail={**_snapshot(line), **(via or {})})
    return line


EDITABLE = ("description", "amount_minor", "currency", "interval", "cron", "charge_date")


def recurring_line_edit(
    *, line: RecurringLine, acting_user=None, via: dict | None = None, **changes
) -> RecurringLine:
    """Change an active or paused line. `card` (a PaymentCard) saves its key on the line;
    `card_lookup_key` alone re-keys it (filled by a matching active card, or left empty)."""
    _require(acting_user, "recurring.change_recurringline", line.space_id)
    unknown = set(changes) - {*EDITABLE, "card", "card_lookup_key"}
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        line = _locked(line)
        if line.status not in (Status.ACTIVE, Status.PAUSED):
            raise IllegalTransition(
                f"This line is {line.get_status_display().lower()}: it cannot be edited."
            )
        before = _snapshot(line)
        customer = line.customer
        amount, currency = _checked_amount(
            changes.get("amount_minor", line.amount_minor),
            changes.get("currency", line.currency),
            customer.space,
        )
        interval, cron = _checked_schedule(
            changes.get("interval", line.interval), changes.get("cron", line.cron)
        )
        if "charge_date" in changes and changes["charge_date"] != line.charge_date:
            line.charge_date = _checked_charge_date(changes["charge_date"])
        line.amount_minor, line.currency, line.interval, line.cron = (
            amount,
            currency,
            interval,
            cron,
        )
        line.description = changes.get("description", line.description)
        if "card" in changes or "card_lookup_key" in changes:
            line.card, line.card_lookup_key = _card_fields(
                customer=customer,
                card=changes.get("card"),
                card_lookup_key=changes.get("card_lookup_key", ""),
            )
        _history_by(line, acting_user, via)
        line.save()
        after = _snapshot(line)
        changed = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
        _audit(line, actor=acting_user, action="edited", detail={**changed, **(via or {})})
    return line


def recurring_line_pause(*, line: RecurringLine, acting_user=None, via=None) -> RecurringLine:
    _require(acting_user, "recurring.change_recurringline", line.space_id)
    with transaction.atomic():
        line = _locked(line)
        _transition(line, Status.PAUSED, actor=acting_user, action="paused", detail=via)
    return line


def recurring_line_resume(
    *,
    line: RecurringLine,
    acting_user=None,
    card: PaymentCard | None = None,
    via: dict | None = None,
) -> RecurringLine:
    """Resume a paused line. A charge date that passed while it was paused moves on to the
    schedule's next date (missed periods are not charged after the fact). A chosen card saves
    its key on the line."""
    _require(acting_user, "recurring.change_recurringline", line.space_id)
    today = timezone.localdate()
    with transaction.atomic():
        line = _locked(line)
        detail = dict(via or {})
        if line.status == Status.PAUSED:
            if card is not None:
                line.card, line.card_lookup_key = _card_fields(
                    customer=line.customer, card=card, card_lookup_key=""
                )
                detail["card"] = line.card.pk
            while line.charge_date < today:
                line.charge_date = next_charge_date(
                    line.charge_date, interval=line.interval, cron=line.cron
                )
            if line.card is None:
                line.card = _matching_card(line.customer_id, line.card_lookup_key)
            detail["charge_date"] = line.charge_date.isoformat()
        try:
            with transaction.atomic():
                _transition(line, Status.ACTIVE, actor=acting_user, action="resumed", detail=detail)
        except IntegrityError:
            # The rolled-forward date is one a former generation of this line already had.
            raise InvalidInput(
                "This line was already charged for its next date; edit the charge date.",
                field="charge_date",
            ) from None
    return line


def recurring_line_cancel(*, line: RecurringLine, acting_user=None, via=None) -> RecurringLine:
    _require(acting_user, "recurring.change_recurringline", line.space_id)
    with transaction.atomic():
        line = _locked(line)
        _transition(line, Status.CANCELLED, actor=acting_user, action="cancelled", detail=via)
    return line


def _snapshot(line: RecurringLine) -> dict:
    return {
        "description": line.description,
        "amount_minor": line.amount_minor,
        "currency": line.currency,
        "interval": line.interval,
        "cron": line.cron,
        "charge_date": line.charge_date.isoformat(),
        "card": line.card_id,
        "card_lookup_key": line.card_lookup_key,
    }


# --- Token side: lines follow their card (called inside cards' transactions) -----------------


def _audit_many(rows, *, action, detail_for) -> None:
    RecurringEvent.objects.bulk_create(
        RecurringEvent(
            space_id=space_id,
            line_id=line_id,
            action=action,
            from_status=status,
            to_status=status,
            detail=detail_for(line_id),
        )
        for line_id, space_id, status in rows
    )


def recurring_lines_fill_for_card(*, card: PaymentCard) -> int:
    """Seed 003's token side: a card that became chargeable fills its customer's *active*
    lines whose card is empty and whose key matches (paused, cancelled and other customers'
    lines are never touched). Runs in the caller's transaction. Returns how many."""
    if card.status != ACTIVE_CARD or not card.lookup_key:
        return 0
    rows = list(
        RecurringLine.objects.select_for_update(of=("self",))
        .filter(
            customer_id=card.customer_id,
            status=Status.ACTIVE,
            card__isnull=True,
            card_lookup_key=card.lookup_key,
        )
        .values_list("pk", "space_id", "status")
    )
    if not rows:
        return 0
    RecurringLine.objects.filter(pk__in=[r[0] for r in rows]).update(
        card=card, updated_at=timezone.now()
    )
    history_write(RecurringLine, [r[0] for r in rows], reason="card filled (card event)")
    _audit_many(
        rows,
        action="card_filled",
        detail_for=lambda _: {"card": card.pk, "lookup_key": card.lookup_key, "by": "card event"},
    )
    return len(rows)


def recurring_lines_empty_for_card(*, card: PaymentCard) -> int:
    """A detached or expired card leaves its open lines: their card is emptied and their key
    stays, so the next matching card fills them. Runs in the caller's transaction."""
    rows = list(
        RecurringLine.objects.select_for_update(of=("self",))
        .filter(card=card, status__in=(Status.ACTIVE, Status.PAUSED))
        .values_list("pk", "space_id", "status")
    )
    if not rows:
        return 0
    RecurringLine.objects.filter(pk__in=[r[0] for r in rows]).update(
        card=None, updated_at=timezone.now()
    )
    history_write(RecurringLine, [r[0] for r in rows], reason=f"card {card.status}")
    _audit_many(
        rows,
        action="card_emptied",
        detail_for=lambda _: {"card": card.pk, "card_status": card.status},
    )
    return len(rows)


def recurring_lines_key_move(*, card: PaymentCard, old_key: str) -> int:
    """The card updater gave a card a new expiry (or number): its open lines' keys move with
    it, so the next generation copies the current key. Runs in the caller's transaction."""
    rows = list(
        RecurringLine.objects.select_for_update(of=("self",))
        .filter(card=card, status__in=(Status.ACTIVE, Status.PAUSED))
        .values_list("pk", "space_id", "status")
    )
    if not rows:
        return 0
    RecurringLine.objects.filter(pk__in=[r[0] for r in rows]).update(
        card_lookup_key=card.lookup_key, updated_at=timezone.now()
    )
    history_write(RecurringLine, [r[0] for r in rows], reason="card's lookup key moved")
    _audit_many(
        rows,
        action="key_moved",
        detail_for=lambda _: {"card": card.pk, "before": old_key, "after": card.lookup_key},
    )
    return len(rows)


def recurring_lines_customer_renumber(*, customer: Customer, old_number: str, new_number: str):
    """The customer's number is the key's CUSTOMER_ID: open lines still waiting for a card
    keep waiting under the new number (lines with a card moved with it already)."""
    prefix = f"{old_number}-"
    lines = list(
        RecurringLine.objects.select_for_update(of=("self",)).filter(
            customer=customer,
            status__in=(Status.ACTIVE, Status.PAUSED),
            card_lookup_key__startswith=prefix,
        )
    )
    for line in lines:
        old_key = line.card_lookup_key
        line.card_lookup_key = f"{new_number}-{old_key.removeprefix(prefix)}"
        line.save(update_fields=["card_lookup_key", "updated_at"])
        _audit(
            line,
            actor=None,
            action="key_moved",
            detail={"before": old_key, "after": line.card_lookup_key},
        )
    return len(lines)


# --- Fallback scan ----------------------------------------------------------------------------


def recurring_lines_fill_scan(*, batch_size: int = 1000, after_id: int = 0) -> int:
    """Beat fallback (seed 003): active lines still without a card get the customer's
    matching active card, so an event lost at deletion time or a missed webhook is caught up.

    Streams in primary-key batches, each its own short transaction (rows locked with SKIP
    LOCKED, so a concurrent card event or a second scan never waits or double-fills): memory
    stays one batch, and a crash loses at most the batch in flight, which the next run
    (starting over from the lowest id) redoes. Returns how many lines were filled."""
    filled = 0
    match = Subquery(
        PaymentCard.objects.filter(
            customer_id=OuterRef("customer_id"),
            lookup_key=OuterRef("card_lookup_key"),
            status=ACTIVE_CARD,
        )
        .order_by("-created_at", "-pk")
        .values("pk")[:1]
    )
    while True:
        with transaction.atomic():
            batch = list(
                RecurringLine.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(status=Status.ACTIVE, card__isnull=True, pk__gt=after_id)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not batch:
                return filled
            after_id = batch[-1]
            rows = list(
                RecurringLine.objects.filter(pk__in=batch)
                .exclude(card_lookup_key="")
                .annotate(match=match)
                .filter(match__isnull=False)
                .values_list("pk", "space_id", "status", "match")
            )
            if rows:
                lines = [RecurringLine(pk=pk, card_id=card_id) for pk, _, _, card_id in rows]
                RecurringLine.objects.bulk_update(lines, ["card"])
                history_write(
                    RecurringLine, [r[0] for r in rows], reason="card filled (fallback scan)"
                )
                cards = {pk: card_id for pk, _, _, card_id in rows}
                _audit_many(
                    [r[:3] for r in rows],
                    action="card_filled",
                    detail_for=lambda pk, cards=cards: {"card": cards[pk], "by": "fallback scan"},
                )
                filled += len(rows)


# --- Missing-card reminders -------------------------------------------------------------------


def _reminder_days(space_id: int) -> int:
    row = RecurringSettings.objects.filter(space_id=space_id).first()
    if row is not None and row.card_reminder_days is not None:
        return row.card_reminder_days
    return settings.RECURRING_CARD_REMINDER_DAYS


def recurring_card_reminders_send(*, today: date | None = None, batch_size: int = 500) -> int:
    """Beat: active lines still without a card once their charge date is within the space's
    reminder days email the customer a registration link, once per line. Streams in batches."""
    today = today or timezone.localdate()
    sent = 0
    space_ids = (
        RecurringLine.objects.filter(
            status=Status.ACTIVE, card__isnull=True, card_reminder_sent_at__isnull=True
        )
        .values_list("space_id", flat=True)
        .distinct()
    )
    for space_id in list(space_ids):
        horizon = today + timedelta(days=_reminder_days(space_id))
        after_id = 0
        while True:
            ids = list(
                RecurringLine.objects.filter(
                    space_id=space_id,
                    status=Status.ACTIVE,
                    card__isnull=True,
                    card_reminder_sent_at__isnull=True,
                    charge_date__lte=horizon,
                    pk__gt=after_id,
                )
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            after_id = ids[-1]
            sent += sum(recurring_line_card_reminder(line_id=line_id) for line_id in ids)
    return sent


def recurring_line_card_reminder(*, line_id: int) -> bool:
    """One line's missing-card reminder: a registration invitation (cards' service) and the
    line marked reminded in one transaction; the email goes out on commit. At most once."""
    with transaction.atomic():
        line = (
            RecurringLine.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("customer")
            .filter(
                pk=line_id,
                status=Status.ACTIVE,
                card__isnull=True,
                card_reminder_sent_at__isnull=True,
            )
            .first()
        )
        if line is None:
            return False
        invitation = card_services.card_invitation_send(
            customer=line.customer, acting_user=None, email=False
        )
        line.card_reminder_sent_at = timezone.now()
        line.save(update_fields=["card_reminder_sent_at", "updated_at"])
        _audit(
            line,
            actor=None,
            action="card_reminder_sent",
            detail={"invitation": str(invitation.public_id), "to": line.customer.email},
        )
        transaction.on_commit(lambda: _reminder_email_later(line.pk, invitation.pk))
    return True


def _reminder_email_later(line_id: int, invitation_id: int) -> None:
    from .tasks import recurring_card_reminder_email

    dispatch(recurring_card_reminder_email, line_id, invitation_id)


def recurring_card_reminder_email_send(*, line_id: int, invitation_id: int) -> None:
    from .notifications import card_reminder_send

    card_reminder_send(line_id=line_id, invitation_id=invitation_id)


# --- Generations ------------------------------------------------------------------------------


def recurring_settings_get(*, space: Space) -> RecurringSettings:
    return RecurringSettings.objects.filter(space=space).first() or RecurringSettings(space=space)


def recurring_settings_update(
    *,
    space: Space,
    acting_user,
    auto_approve_up_to_minor: int,
    auto_approve_currency: str,
    card_reminder_days: int | None,
) -> RecurringSettings:
    """An admin sets up to which amount recurring charges are approved by rule (and the
    reminder days). Audited; the approvals it makes name it and who set it."""
    _require(acting_user, "recurring.change_recurringsettings", space.pk)
    currency = (auto_approve_currency or space.default_currency).upper()
    if currency not in money.CURRENCIES:
        raise InvalidInput(f"{currency} is not a currency we charge in.", field="currency")
    if auto_approve_up_to_minor < 0:
        raise InvalidInput("The amount cannot be negative.", field="auto_approve_up_to_minor")
    with transaction.atomic():
        row, _ = RecurringSettings.objects.select_for_update().get_or_create(space=space)
        before = {
            "auto_approve_up_to_minor": row.auto_approve_up_to_minor,
            "auto_approve_currency": row.auto_approve_currency,
            "card_reminder_days": row.card_reminder_days,
        }
        row.auto_approve_up_to_minor = auto_approve_up_to_minor
        row.auto_approve_currency = currency
        row.card_reminder_days = card_reminder_days
        row.updated_by = acting_user
        row._history_user = acting_user
        row.save()
        RecurringEvent.objects.create(
            space=space,
            action="settings_changed",
            actor=acting_user,
            detail={
                "before": before,
                "after": {
                    "auto_approve_up_to_minor": auto_approve_up_to_minor,
                    "auto_approve_currency": currency,
                    "card_reminder_days": card_reminder_days,
                },
            },
        )
    return row


def _approval_rule(space_id: int) -> dict | None:
    row = RecurringSettings.objects.select_related("updated_by").filter(space_id=space_id).first()
    if row is None or row.auto_approve_up_to_minor <= 0:
        return None
    return {
        "up_to_minor": row.auto_approve_up_to_minor,
        "currency": row.auto_approve_currency,
        "set_by": row.updated_by.get_username() if row.updated_by else "",
        "set_by_id": row.updated_by_id,
        "set_at": row.updated_at.isoformat(),
    }


def recurring_lines_generate_due(*, today: date | None = None, batch_size: int = 500) -> int:
    """Beat: every active line whose charge date has come becomes a charging issue, and its
    next generation is created. Streams due ids in batches; each line is its own transaction,
    so a crash loses nothing (the next run finds the lines not yet generated) and a doubled or
    concurrent run makes one issue per line per period (see recurring_line_generate).

    Bounded: past the task deadline it takes no further line and sends itself again for the
    rest (one message; the beat, every 15 minutes, would also find them), so a run never
    outlasts the broker's visibility timeout however many lines fall due on one day."""
    from .tasks import recurring_lines_generate_due as generate_task

    today = today or timezone.localdate()
    deadline = Deadline()
    made, handled, after_id = 0, 0, 0
    while True:
        ids = list(
            RecurringLine.objects.filter(
                status=Status.ACTIVE, charge_date__lte=today, pk__gt=after_id
            )
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return made
        after_id = ids[-1]
        for line_id in ids:
            if handled and deadline.passed():  # at least one line per run: always progress
                logger.info("recurring generation: deadline reached, %s made, rest sent on", made)
                dispatch(generate_task)
                return made
            made += recurring_line_generate(line_id=line_id, today=today) is not None
            handled += 1


def recurring_line_generate(*, line_id: int, today: date | None = None) -> RecurringLine | None:
    """One due line: its charging issue (billing; approved by the space's rule or waiting for
    an approver) and the next generation (key and card copied), in one transaction. Returns the
    next generation, or None when the line is not due, is taken by another worker, or has no
    card yet (it waits: the fallback scan or a new card fills it, the reminder asks for one).

    Exactly once per period: the line is locked (SKIP LOCKED) and must still be active without
    an issue; the unique (series, charge_date) and the one-to-one issue and generated_from
    columns refuse a second row for the same period whatever runs concurrently."""
    today = today or timezone.localdate()
    with transaction.atomic():
        line = (
            RecurringLine.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("customer__space", "card")
            .filter(
                pk=line_id, status=Status.ACTIVE, charge_date__lte=today, charge_issue__isnull=True
            )
            .first()
        )
        if line is None or line.card_id is None:
            return None
        # The card's row lock orders this against cards' detach/expiry (which lock or update
        # the card first): either that change committed and the card is not active here, or it
        # waits and then empties the card on the next generation created below too.
        card = PaymentCard.objects.select_for_update().get(pk=line.card_id)
        if card.status != ACTIVE_CARD:
            return None
        try:
            with transaction.atomic():
                issue = billing_services.charge_issue_start_recurring(
                    customer=line.customer,
                    card=line.card,
                    amount_minor=line.amount_minor,
                    currency=line.currency,
                    reference=f"recurring:{line.series}:{line.charge_date.isoformat()}",
                    notification_body=line.description,
                    approval_rule=_approval_rule(line.space_id),
                    detail={"recurring_line": line.pk, "generation": line.generation},
                )
        except BillingError as exc:
            # E.g. the space lowered its maximum below the line's amount: the line waits, and
            # says why, for staff to edit it.
            _audit(line, actor=None, action="generation_refused", detail={"code": exc.code})
            logger.warning("recurring line %s not generated: %s", line.pk, exc.code)
            return None
        line.charge_issue = issue
        _transition(
            line,
            Status.GENERATED,
            actor=None,
            action="generated",
            detail={"charge_issue": issue.pk, "issue_state": issue.state},
        )
        following = line.charge_date
        while following <= line.charge_date or following < today:
            following = next_charge_date(following, interval=line.interval, cron=line.cron)
        nxt = RecurringLine.objects.create(
            space_id=line.space_id,
            customer_id=line.customer_id,
            series=line.series,
            description=line.description,
            amount_minor=line.amount_minor,
            currency=line.currency,
            interval=line.interval,
            cron=line.cron,
            charge_date=following,
            card=line.card,
            card_lookup_key=line.card_lookup_key,
            generation=line.generation + 1,
            generated_from=line,
        )
        _audit(
            nxt, actor=None, action="created", detail={**_snapshot(nxt), "generated_from": line.pk}
        )
    return nxt
