"""Charge flows (seed 004): when a charge fails, a flow of levels collects it.

Configuration: ChargeFlow (per space, by priority, with typed conditions) and its
ChargeFlowLevelConfiguration rows. Runtime: one ChargeFlowCase per collected issue with the flow
chosen once, one ChargeFlowLevel per level it reached, and the level's ChargeFlowLevelPaymentLink.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper

from core.history import history_records
from spaces.models import Space


class ChargeFlow(models.Model):
    class State(models.TextChoices):
        CREATE = "create", "Create"
        ACTIVE = "active", "Active"
        INACTIVE = "inactive", "Inactive"
        DELETING = "deleting", "Deleting"
        DELETED = "deleted", "Deleted"

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="charge_flows")
    name = models.CharField(max_length=200, db_index=True)
    priority = models.IntegerField(default=100, help_text="Lower first.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.CREATE)
    planned_purge_date = models.DateTimeField(
        null=True, blank=True, help_text="When the flow is removed for good. Empty: never."
    )
    is_default = models.BooleanField(default=False, editable=False)
    # Optimistic locking: every update is `... WHERE version = <the version read>` (services).
    version = models.PositiveIntegerField(default=1, editable=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = history_records()

    class Meta:
        ordering = ["space", "priority", "pk"]
        indexes = [models.Index(fields=["space", "state", "priority"])]

    def __str__(self):
        return self.name


F = ChargeFlow.State
# The one table of allowed state changes of a flow; services refuse anything else.
FLOW_TRANSITIONS: dict[str, frozenset[str]] = {
    F.CREATE: frozenset({F.ACTIVE, F.INACTIVE, F.DELETING}),
    F.ACTIVE: frozenset({F.INACTIVE, F.DELETING}),
    F.INACTIVE: frozenset({F.ACTIVE, F.DELETING}),
    # Deleting waits for the flow's running cases; Deleted waits for the purge date.
    F.DELETING: frozenset({F.DELETED}),
    F.DELETED: frozenset(),
}


@dataclass(frozen=True)
class CaseFacts:
    """What conditions are tested on: the issue being collected, as it stood at selection."""

    amount_minor: int
    currency: str
    card_brand: str
    origin: str
    last_decline_code: str
    customer_tags: frozenset[str] = frozenset()


class ChargeFlowCondition(models.Model):
    """One typed condition of a flow; a flow applies when all of its conditions hold."""

    class Kind(models.TextChoices):
        AMOUNT_RANGE = "amount_range", "Amount range (minor units, inclusive)"
        CURRENCY = "currency", "Currency"
        CARD_BRAND = "card_brand", "Card brand"
        CUSTOMER_TAG = "customer_tag", "Customer tag"
        ORIGIN = "origin", "Origin"
        LAST_DECLINE_CODE = "last_decline_code", "Last decline code"

    class Origin(models.TextChoices):
        MANUAL = "manual", "Manual (staff or card registration)"
        API = "api", "API"
        RECURRING = "recurring", "Recurring"

    flow = models.ForeignKey(ChargeFlow, on_delete=models.CASCADE, related_name="conditions")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    min_amount_minor = models.BigIntegerField(null=True, blank=True)
    max_amount_minor = models.BigIntegerField(null=True, blank=True)
    value = models.CharField(
        max_length=60,
        blank=True,
        help_text="Currency code, card brand, customer tag, origin or decline code.",
    )
    history = history_records()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="amount_range")
                | Q(min_amount_minor__isnull=False)
                | Q(max_amount_minor__isnull=False),
                name="flow_condition_amount_has_bound",
            ),
            models.CheckConstraint(
                condition=Q(kind="amount_range") | ~Q(value=""),
                name="flow_condition_has_value",
            ),
        ]

    def __str__(self):
        if self.kind == self.Kind.AMOUNT_RANGE:
            return f"amount in [{self.min_amount_minor}, {self.max_amount_minor}]"
        return f"{self.kind} = {self.value}"

    def holds(self, facts: CaseFacts) -> bool:
        kind = self.Kind
        if self.kind == kind.AMOUNT_RANGE:
            low_ok = self.min_amount_minor is None or facts.amount_minor >= self.min_amount_minor
            high_ok = self.max_amount_minor is None or facts.amount_minor <= self.max_amount_minor
            return low_ok and high_ok
        if self.kind == kind.CURRENCY:
            return facts.currency.upper() == self.value.upper()
        if self.kind == kind.CARD_BRAND:
            return facts.card_brand.lower() == self.value.lower()
        if self.kind == kind.ORIGIN:
            return facts.origin == self.value
        if self.kind == kind.CUSTOMER_TAG:
            return self.value.strip().lower() in facts.customer_tags
        if self.kind == kind.LAST_DECLINE_CODE:
            return facts.last_decline_code == self.value
        return False


class ChargeFlowLevelConfiguration(models.Model):
    """One level of a flow: what it tries and how long it waits before the next level."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        INACTIVE = "inactive", "Inactive"

    class LinkDelivery(models.TextChoices):
        EMAIL = "email", "Email to the customer"
        OUTBOUND_EVENT = "outbound_event", "Signed outbound event (another system delivers it)"

    flow = models.ForeignKey(ChargeFlow, on_delete=models.CASCADE, related_name="levels")
    name = models.CharField(max_length=200)
    priority = models.IntegerField(default=1, help_text="Order within the flow, lower first.")
    period = models.DurationField(help_text="ISO 8601 duration, e.g. P3D.")
    run_token_charge = models.BooleanField("charge the saved card", default=True)
    run_saved_method = models.BooleanField(
        "charge another saved method (no customer action)", default=False
    )
    run_payment_link = models.BooleanField("send the payment link", default=False)
    notify_customer = models.BooleanField(
        "email the customer when the level starts (what happened, what comes next)",
        default=False,
    )
    link_delivery = models.CharField(
        max_length=20, choices=LinkDelivery.choices, default=LinkDelivery.EMAIL
    )
    # {"en": {"subject": ..., "body": ...}, "de": {...}}: empty = the built-in wording.
    email_texts = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    version = models.PositiveIntegerField(default=1, editable=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)
    history = history_records()

    class Meta:
        ordering = ["flow", "priority", "pk"]
        constraints = [
            models.CheckConstraint(condition=Q(period__gt=timedelta(0)), name="level_period_pos"),
        ]

    def __str__(self):
        return f"{self.flow}: {self.name}"


class ChargeFlowCase(models.Model):
    """The collection of one charging issue by the flow chosen once, when it started."""

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="charge_flow_cases")
    issue = models.OneToOneField(
        "billing.ChargeIssue", on_delete=models.PROTECT, related_name="flow_case"
    )
    flow = models.ForeignKey(ChargeFlow, on_delete=models.PROTECT, related_name="cases")
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.RUNNING, db_index=True
    )
    recipient_email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            # The admin list's order (read backwards for newest first).
            models.Index(fields=["created_at", "id"], name="flowcase_created"),
            # The admin search's email match (any case), beside the issue's own lookups.
            models.Index(Upper("recipient_email"), name="flowcase_recipient_upper"),
            # The work queue's collections that ended without payment lately.
            models.Index(
                fields=["finished_at"], condition=Q(state="failed"), name="flowcase_failed"
            ),
        ]

    def __str__(self):
        return f"Collection of charge #{self.issue_id}"


C = ChargeFlowCase.State
CASE_TRANSITIONS: dict[str, frozenset[str]] = {
    C.RUNNING: frozenset({C.SUCCEEDED, C.FAILED, C.CANCELLED}),
    C.SUCCEEDED: frozenset(),
    C.FAILED: frozenset(),
    C.CANCELLED: frozenset(),
}


class ChargeFlowLevel(models.Model):
    """A case at one level: its steps run in order until one collects or the period ends.

    `due_at` is when the runner next has work here (the next step, or the end of the period);
    NULL while a charge is under way, so the runner never picks a level that is charging.
    `claimed_until` is the lease of the run dispatched for it: other claims skip the level until
    then, and the run's message carries it as a fencing token. It is a column of its own, not
    indexed, so that a claim's UPDATE is a HOT update (no index entries written; the table
    keeps free space on its pages for that, see migration 0003): a claim then costs the same
    with 10,000 or 1,000,000 waiting levels (bench/due_levels.py).
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCESSFUL = "successful", "Successful"
        FAILED = "failed", "Failed"

    class Step(models.TextChoices):
        TOKEN = "token", "Charge the saved card"
        TOKEN_CHARGING = "token_charging", "Charging the saved card"
        METHOD = "method", "Charge another saved method"
        METHOD_CHARGING = "method_charging", "Charging another saved method"
        LINK = "link", "Send the payment link"
        WAITING = "waiting", "Waiting for the payment link or the end of the period"
        DONE = "done", "Done"

    # No index of its own: uniq_level_position (case, position) serves lookups by case.
    case = models.ForeignKey(
        ChargeFlowCase, on_delete=models.CASCADE, related_name="levels", db_index=False
    )
    configuration = models.ForeignKey(
        ChargeFlowLevelConfiguration, on_delete=models.PROTECT, related_name="+"
    )
    position = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    step = models.CharField(max_length=20, choices=Step.choices, default=Step.TOKEN)
    started_at = models.DateTimeField()
    times_out_at = models.DateTimeField()
    due_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # When the beat (or a run) put a run message for this level on the broker that no worker
    # has taken yet: the beat does not send another meanwhile, however long the lease has
    # ended (core.tasks.dispatch_due; a run clears it when it takes its message).
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    # [{"step": ..., "code": ..., "message": ..., "at": ...}], oldest first.
    failures = models.JSONField(default=list, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["case", "position"]
        constraints = [
            models.UniqueConstraint(fields=["case", "position"], name="uniq_level_position"),
        ]
        indexes = [
            # The runner's claim: only pending levels with work are in it, however many
            # finished ones accumulate (bench/due_levels.py).
            models.Index(
                fields=["due_at"],
                condition=Q(state="pending", due_at__isnull=False),
                name="flow_level_due",
            ),
        ]

    def __str__(self):
        return f"Level {self.position} of case {self.case_id}"


class ChargeFlowLevelPaymentLink(models.Model):
    """The payment page link of a level: signed, expires with its level, works once."""

    level = models.OneToOneField(
        ChargeFlowLevel, on_delete=models.CASCADE, related_name="payment_link"
    )
    expires_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    used_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    # The card the customer entered on the page (saved to their provider customer), charged
    # once through payments' attempt path (chargeflows.charging.PaymentLinkCharge).
    provider_payment_method_id = models.CharField(max_length=255, blank=True)
    provider_payment_intent_id = models.CharField(max_length=255, blank=True)
    # What kind of method that is (a new card, or a SEPA Direct Debit account whose debit may
    # stay processing for days), the SetupIntent that confirmed it, and whether the customer
    # asked to keep it: kept once the payment succeeds (payment_link_method_keep).
    # Never the card number or the IBAN: those went to the provider only.
    payment_method_type = models.CharField(
        max_length=20, blank=True, choices=[("card", "Card"), ("sepa_debit", "SEPA Direct Debit")]
    )
    provider_setup_intent_id = models.CharField(max_length=255, blank=True)
    keep_method = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # Links still open to the customer (the work queue's collections waiting on one):
            # few, however many were used or retired.
            models.Index(
                fields=["expires_at"],
                condition=Q(used_at__isnull=True, retired_at__isnull=True),
                name="link_open",
            ),
        ]

    def __str__(self):
        return f"Payment link of {self.level}"


class ChargeFlowCaseEvent(models.Model):
    """Audit trail of a case and its flow's configuration changes: who, when, what."""

    case = models.ForeignKey(
        ChargeFlowCase, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    flow = models.ForeignKey(
        ChargeFlow, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=40)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self):
        return f"{self.action} ({self.created_at:%Y-%m-%d %H:%M})"


class Dashboard(Space):
    """A space seen as its dashboard (figures of charges and collections), so the admin lists
    it as a page of its own under the user's spaces. No table: a proxy of Space."""

    class Meta:
        proxy = True
        verbose_name = "dashboard"
        verbose_name_plural = "dashboards"
        default_permissions = ()
