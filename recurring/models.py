"""Seed 003's auto-ship lines: a recurring charge that finds its card by a lookup key.

Each line row is one *generation*: it charges once, for its charge date (the period), and the
generation task then creates the next row (generation + 1, generated_from = this one) with the
key and card copied. All generations of one line share `series`; (series, charge_date) is
unique, so a doubled run cannot make a second row (or charging issue) for the same period.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from billing.models import ChargeIssue
from cards.models import Customer, PaymentCard
from core.history import history_records
from core.money import CURRENCY_CHOICES
from spaces.models import Space


class RecurringLine(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"
        # Its charging issue exists and the next generation took over.
        GENERATED = "generated", "Generated (next generation took over)"

    class Interval(models.TextChoices):
        MONTHLY = "monthly", "Monthly"
        WEEKLY = "weekly", "Weekly"
        YEARLY = "yearly", "Yearly"
        CRON = "cron", "Cron-like schedule"

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="recurring_lines")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="recurring_lines")
    series = models.UUIDField(
        default=uuid.uuid4, editable=False, help_text="Shared by all generations of one line."
    )
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    description = models.CharField(max_length=200, blank=True)
    amount_minor = models.BigIntegerField("amount (minor units)")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    interval = models.CharField(max_length=10, choices=Interval.choices, default=Interval.MONTHLY)
    cron = models.CharField(
        max_length=100,
        blank=True,
        help_text="For a cron-like schedule: 'day-of-month month day-of-week', e.g. '1,15 * *' "
        "or '* * 1' (Mondays).",
    )
    charge_date = models.DateField("next charge date")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    card = models.ForeignKey(
        PaymentCard,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="recurring_lines",
    )
    card_lookup_key = models.CharField(
        "card lookup key",
        max_length=120,
        blank=True,
        help_text="[CUSTOMER_ID]-[BRAND]-[LAST_FOUR]-[EXP_DATE], "
        "e.g. 0283759-Mastercard-4242-06/25.",
    )
    generation = models.PositiveIntegerField(default=1)
    generated_from = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="next_generation",
    )
    charge_issue = models.OneToOneField(
        ChargeIssue,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="recurring_line",
    )
    card_reminder_sent_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = history_records()

    class Meta:
        ordering = ["charge_date", "pk"]
        constraints = [
            # One generation (and so one charging issue) per line per period.
            models.UniqueConstraint(fields=["series", "charge_date"], name="uniq_recurring_period"),
            models.CheckConstraint(
                condition=Q(amount_minor__gt=0), name="recurring_line_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(interval="cron", cron__gt="") | (~Q(interval="cron") & Q(cron="")),
                name="recurring_line_cron_iff_cron_interval",
            ),
        ]
        indexes = [
            # The token side: one customer's active lines still waiting for a card, by key.
            models.Index(
                fields=["customer", "card_lookup_key"],
                condition=Q(status="active", card__isnull=True),
                name="recurring_awaiting_card",
            ),
            # The fallback scan walks the same lines in primary-key batches.
            models.Index(
                fields=["id"],
                condition=Q(status="active", card__isnull=True),
                name="recurring_awaiting_card_scan",
            ),
            # The generation task: active lines by charge date.
            models.Index(
                fields=["charge_date", "id"],
                condition=Q(status="active"),
                name="recurring_due",
            ),
        ]

    def __str__(self):
        return f"Line {self.series.hex[:8]} gen {self.generation} – {self.customer_id}"


S = RecurringLine.Status

# The one table of allowed status changes; services refuse anything else.
TRANSITIONS: dict[str, frozenset[str]] = {
    S.ACTIVE: frozenset({S.PAUSED, S.CANCELLED, S.GENERATED}),
    S.PAUSED: frozenset({S.ACTIVE, S.CANCELLED}),
    S.CANCELLED: frozenset(),
    S.GENERATED: frozenset(),
}


class RecurringSettings(models.Model):
    """A space's rules for recurring lines, set by an admin (audited as RecurringEvent)."""

    space = models.OneToOneField(Space, on_delete=models.CASCADE, related_name="recurring_settings")
    auto_approve_up_to_minor = models.BigIntegerField(
        "approved by rule up to (minor units)",
        default=0,
        help_text="Recurring charges up to this amount (in the currency below) are approved by "
        "rule; larger ones wait for an approver. 0: every recurring charge waits.",
    )
    auto_approve_currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, default="EUR")
    card_reminder_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Days before the charge date a line without a card emails the customer a "
        "registration link. Empty: RECURRING_CARD_REMINDER_DAYS.",
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)
    history = history_records()

    class Meta:
        verbose_name = "recurring settings"
        verbose_name_plural = "recurring settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(auto_approve_up_to_minor__gte=0), name="recurring_auto_approve_ge_0"
            )
        ]

    def __str__(self):
        return f"Recurring settings of {self.space}"


class RecurringEvent(models.Model):
    """Audit trail: who did what to a line (or to the space's recurring settings), and when.
    Written by services in the same transaction as the change."""

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="recurring_events")
    line = models.ForeignKey(
        RecurringLine, null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    action = models.CharField(max_length=40)
    from_status = models.CharField(max_length=12, blank=True)
    to_status = models.CharField(max_length=12, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty when the system (a card event, a schedule) or an API key acted.",
    )
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self):
        return f"{self.action} on line {self.line_id}"


class LineMissingCard(RecurringLine):
    """The staff list of the gap seed 003 worries about: active lines still without a card."""

    class Meta:
        proxy = True
        verbose_name = "line missing a card"
        verbose_name_plural = "lines missing a card"


class ExpiringCard(PaymentCard):
    """The staff list of cards whose expiry month ends soon, with what depends on them: the
    recurring lines charged to them and the running collections that try them. It lives here,
    above cards, because only a room that sees the lines (and the issues of the collections)
    can list them."""

    class Meta:
        proxy = True
        verbose_name = "card expiring soon"
        verbose_name_plural = "cards expiring soon"
