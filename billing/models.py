import hashlib

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper

from cards.models import CardEvent, Customer, PaymentCard
from core.history import history_records
from core.money import format_money, format_money_local
from spaces.models import Space


class ChargeIssue(models.Model):
    """One charging case (seed 000's "Credit Card Charging"): entered, approved, charged once."""

    class State(models.TextChoices):
        AWAITING_AMOUNT = "awaiting_amount", "1. Awaiting charge amount entry"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        RETURNED = "returned", "Returned to the clerk"
        APPROVED = "approved", "Approved, waiting for its charge date"
        CHARGING = "charging", "Charging"
        COLLECTING = "collecting", "Collecting (charge flow)"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Source(models.TextChoices):
        CARD_REGISTERED = "card_registered", "Card registration"
        API = "api", "Another system (API)"
        RESTART = "restart", "1r. restart from a past issue"
        STAFF = "staff", "Staff"
        RECURRING = "recurring", "Recurring line"

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="charge_issues")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="charge_issues")
    card = models.ForeignKey(PaymentCard, on_delete=models.PROTECT, related_name="charge_issues")
    source = models.CharField(max_length=20, choices=Source.choices)
    started_by_event = models.OneToOneField(
        CardEvent,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="charge_issue",
        help_text="The 'card registered' event that started this issue (at most one issue each).",
    )
    restarted_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="restarts"
    )
    external_reference = models.CharField(max_length=100, blank=True)

    # Inherited at start and shown read-only, so staff need not type customer or provider data.
    customer_name = models.CharField(max_length=200)
    customer_email = models.EmailField()
    provider_customer_id = models.CharField(max_length=255)
    card_last4 = models.CharField("last 4", max_length=4)

    amount_minor = models.BigIntegerField("amount (minor units)", null=True, blank=True)
    currency = models.CharField(max_length=3)
    notification_subject = models.CharField(max_length=200, blank=True)
    notification_body = models.TextField(blank=True)
    charge_date = models.DateTimeField(
        null=True, blank=True, help_text="Empty: charge as soon as it is approved."
    )

    state = models.CharField(
        max_length=20, choices=State.choices, default=State.AWAITING_AMOUNT, db_index=True
    )
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    entered_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    failure_code = models.CharField(max_length=60, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    hard_decline = models.BooleanField(default=False)
    # The total of its succeeded refunds (Refund below). The state stays "succeeded": it says
    # how the charge ended, and a refund is a movement of its own with its own state machine.
    # db_default: the single-statement paths and SQL fills insert issues without it.
    refunded_minor = models.BigIntegerField("refunded (minor units)", default=0, db_default=0)
    # When a message for this row was last put on the broker and not yet taken: the beat
    # sweeper does not send another meanwhile (core.tasks.dispatch_due).
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        permissions = [
            ("enter_amount", "Can do 1. charge amount entry"),
            ("approve_charge", "Can approve or return charges"),
        ]
        indexes = [
            models.Index(
                fields=["charge_date"], condition=Q(state="approved"), name="issue_due_to_charge"
            ),
            # The admin list's order (read backwards for newest first): a page, the 50th too,
            # is read off the index instead of sorting every issue of the space.
            models.Index(fields=["created_at", "id"], name="issue_created"),
            # The admin search's exact matches (billing.selectors.charge_issue_search); the
            # customer's name has a trigram index on PostgreSQL (migration 0006).
            models.Index(Upper("customer_email"), name="issue_customer_email_upper"),
            models.Index(fields=["external_reference"], name="issue_external_reference"),
            models.Index(fields=["provider_customer_id"], name="issue_provider_customer"),
            models.Index(fields=["card_last4"], name="issue_card_last4"),
            # Unfinished issues, the few among all: the work queues' counts in every admin
            # page's sidebar (config.work_queue) and the dashboard's open charges are
            # index-only scans of it, not passes over every issue.
            models.Index(
                fields=["space", "state", "entered_by"],
                condition=~Q(state__in=["succeeded", "failed", "cancelled"]),
                name="issue_unfinished",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount_minor__isnull=True) | Q(amount_minor__gt=0),
                name="issue_amount_positive",
            ),
            # The target of refunds' composite foreign key (a refund stays in its issue's space).
            models.UniqueConstraint(fields=["id", "space"], name="uniq_issue_id_space"),
            # Never more refunded than was charged (the refund service checks first, under the
            # issue's lock; this is the database's last word).
            models.CheckConstraint(
                condition=Q(refunded_minor=0)
                | Q(refunded_minor__gt=0, refunded_minor__lte=models.F("amount_minor")),
                name="issue_refunded_within_amount",
            ),
            # One unfinished issue per reference and space, whatever races: two concurrent
            # starts with one reference cannot both commit. Finished ones are left out, so a
            # 1r. restart (which copies the reference) of a finished issue is allowed; the API
            # also refuses a reference whose charge succeeded (api_services, "live").
            models.UniqueConstraint(
                fields=["space", "external_reference"],
                condition=~Q(external_reference="")
                & ~Q(state__in=["succeeded", "failed", "cancelled"]),
                name="issue_open_reference_unique",
            ),
        ]

    def __str__(self):
        return f"Charge #{self.pk} – {self.customer_name}"

    @property
    def amount_display(self) -> str:
        return format_money(self.amount_minor, self.currency)

    @property
    def amount_local(self) -> str:
        """The amount as the customer reads it, in the active language (pages, emails)."""
        return format_money_local(self.amount_minor, self.currency)

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def refunded_display(self) -> str:
        if not self.refunded_minor:
            return "—"
        whole = " (in full)" if self.refunded_minor == self.amount_minor else " (partially)"
        return f"{format_money(self.refunded_minor, self.currency)}{whole}"


S = ChargeIssue.State

# The one table of allowed state changes; services refuse anything else.
TRANSITIONS: dict[str, frozenset[str]] = {
    S.AWAITING_AMOUNT: frozenset({S.AWAITING_APPROVAL, S.CANCELLED}),
    S.RETURNED: frozenset({S.AWAITING_APPROVAL, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.APPROVED, S.RETURNED, S.CANCELLED}),
    # approved → collecting: staff send a charge with no usable card straight to collection.
    S.APPROVED: frozenset({S.CHARGING, S.COLLECTING, S.CANCELLED}),
    # A failed charge is collected by a charge flow (chargeflows), which ends it.
    S.CHARGING: frozenset({S.SUCCEEDED, S.COLLECTING}),
    S.COLLECTING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
FINISHED_STATES = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
# A "live" charge holds its reference for the API: every state but cancelled and failed (a
# succeeded charge was made for that reference; starting another needs a new reference).
LIVE_STATES = frozenset(set(S) - {S.FAILED, S.CANCELLED})


# What each audit action code means, in the words the history shows (never the raw code).
EVENT_ACTION_LABELS = {
    "started": "Started",
    "amount_entered": "1. Charge amount entered",
    "returned": "Returned to the clerk",
    "approved": "Approved",
    "approved_by_rule": "Approved by rule",
    "approval_refused": "Approval refused",
    "cancelled": "Cancelled",
    "sent_to_collection": "Sent to collection",
    "charge_started": "Charge started",
    "charge_succeeded": "Charge succeeded",
    "charge_failed": "Charge failed",
    "collection_succeeded": "Collected (charge flow)",
    "collection_failed": "Collection failed",
    "collection_cancelled": "Collection cancelled",
}


class ChargeIssueEvent(models.Model):
    """Audit trail: who did what to an issue, when, from which state to which."""

    issue = models.ForeignKey(ChargeIssue, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=40)
    from_state = models.CharField(max_length=20, blank=True)
    to_state = models.CharField(max_length=20, blank=True)
    comment = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self):
        return f"{self.action_label} on #{self.issue_id}"

    @property
    def action_label(self) -> str:
        return EVENT_ACTION_LABELS.get(self.action, self.action.replace("_", " ").capitalize())

    @property
    def from_state_label(self) -> str:
        return _state_label(self.from_state)

    @property
    def to_state_label(self) -> str:
        return _state_label(self.to_state)


def _state_label(value: str) -> str:
    return ChargeIssue.State(value).label if value in ChargeIssue.State.values else value


class Refund(models.Model):
    """A full or partial refund of a succeeded charge: requested by a clerk, approved by
    someone else when above the space's refund threshold, made exactly once through payments'
    money path (billing.charging.RefundCharge)."""

    class State(models.TextChoices):
        REQUESTED = "requested", "Requested"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        APPROVED = "approved", "Approved, to be refunded"
        REFUNDING = "refunding", "Refunding"
        SUCCEEDED = "succeeded", "Refunded"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="refunds")
    issue = models.ForeignKey(ChargeIssue, on_delete=models.PROTECT, related_name="refunds")
    amount_minor = models.BigIntegerField("amount (minor units)")
    currency = models.CharField(max_length=3)
    reason = models.TextField()
    state = models.CharField(
        max_length=20, choices=State.choices, default=State.REQUESTED, db_index=True
    )
    # The charge's PaymentIntent, taken when the refund is requested.
    provider_payment_intent_id = models.CharField(max_length=255)
    provider_refund_id = models.CharField(max_length=255, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    failure_code = models.CharField(max_length=60, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    # When a message for this row was last put on the broker and not yet taken: the beat
    # sweeper does not send another meanwhile (core.tasks.dispatch_due).
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="refund_amount_positive"),
        ]

    def __str__(self):
        return f"Refund #{self.pk} of charge #{self.issue_id}"

    @property
    def amount_display(self) -> str:
        return format_money(self.amount_minor, self.currency)

    @property
    def amount_local(self) -> str:
        """The refunded amount as the customer reads it, in the active language."""
        return format_money_local(self.amount_minor, self.currency)


R = Refund.State

# The one table of a refund's allowed state changes; services refuse anything else.
REFUND_TRANSITIONS: dict[str, frozenset[str]] = {
    # Above the space's threshold it waits for an approver; at or below it is approved by rule.
    R.REQUESTED: frozenset({R.AWAITING_APPROVAL, R.APPROVED}),
    R.AWAITING_APPROVAL: frozenset({R.APPROVED, R.REJECTED}),
    R.APPROVED: frozenset({R.REFUNDING}),
    R.REFUNDING: frozenset({R.SUCCEEDED, R.FAILED}),
    R.SUCCEEDED: frozenset(),
    R.FAILED: frozenset(),
    R.REJECTED: frozenset(),
}
# What a refund holds of the charge until it ends: counted when refusing one above what is left.
REFUND_OPEN_STATES = frozenset({R.REQUESTED, R.AWAITING_APPROVAL, R.APPROVED, R.REFUNDING})


class RefundEvent(models.Model):
    """Audit trail of a refund: who did what, when, from which state to which. Only services
    write it, in the same transaction as the step."""

    refund = models.ForeignKey(Refund, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=40)
    from_state = models.CharField(max_length=20, blank=True)
    to_state = models.CharField(max_length=20, blank=True)
    comment = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self):
        return f"{self.action} on refund #{self.refund_id}"


class ApiKey(models.Model):
    """A per-space key other systems use to start charging issues. Only its hash is stored."""

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # The hash stays out of history: one copy of it is enough.
    history = history_records(excluded_fields=["key_hash"])

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(secret: str) -> str:
        # The key carries 256 random bits, so a plain SHA-256 is enough (no password stretching).
        return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyEvent(models.Model):
    """Audit trail of API keys: who created or revoked which key, when. Only services write it,
    in the same transaction as the change."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        REVOKED = "revoked", "Revoked"

    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="events")
    action = models.CharField(max_length=20, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "API key event"
        ordering = ["created_at", "pk"]

    def __str__(self):
        return f"{self.get_action_display()} {self.api_key}"


class ApiIdempotencyRecord(models.Model):
    """The first answer to a client's Idempotency-Key, replayed for repeats."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="uniq_api_idempotency_key")
        ]

    def __str__(self):
        return f"{self.api_key_id}:{self.key}"
