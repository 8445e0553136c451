"""The money path's rows: provider charges (ChargeAttempt), provider events in (ProviderEvent),
our signed events out (OutboundEvent with its DeliveryAttempt log)."""

import uuid

from django.db import models
from django.db.models import Q

from spaces.models import Space

# Owner foreign keys of an attempt, one per kind of owner. A new owner (a charge-flow level, a
# payment link, a recurring generation) adds its field here and to the check below when its
# model exists. String references: payments never imports the rooms above it.
OWNER_FIELDS = ("charge_issue", "flow_level", "payment_link", "refund")


def _exactly_one_owner() -> Q:
    condition = Q()
    for field in OWNER_FIELDS:
        others = [other for other in OWNER_FIELDS if other != field]
        only_this = Q(**{f"{field}__isnull": False})
        for other in others:
            only_this &= Q(**{f"{other}__isnull": True})
        condition |= only_this
    return condition


class ChargeAttempt(models.Model):
    """One provider charge, committed with its idempotency key before the provider is called.

    A refund (purpose REFUND, owner `refund`) is an attempt too, moving money the other way:
    provider_payment_intent_id is then the charge's PaymentIntent being refunded (part of the
    snapshot), and provider_refund_id the provider's Refund once it exists.

    What is charged is a snapshot taken when the attempt begins, so a later change of the
    owner (a new card, an edited amount) can never change a charge already under way.
    """

    class Purpose(models.TextChoices):
        ISSUE_CHARGE = "issue_charge", "Charging issue"
        FLOW_LEVEL = "flow_level", "Charge-flow level"
        PAYMENT_LINK = "payment_link", "Payment link"
        RECURRING_GENERATION = "recurring_generation", "Recurring generation"
        REFUND = "refund", "Refund"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (the provider is being called)"
        PROCESSING = "processing", "Processing at the provider (settled later)"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        UNKNOWN = "unknown", "Outcome unknown (to be reconciled)"

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="charge_attempts")
    purpose = models.CharField(max_length=30, choices=Purpose.choices)
    charge_issue = models.OneToOneField(
        "billing.ChargeIssue",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="attempt",
    )
    # A level may charge twice (the saved card, then another saved method): a plain foreign key.
    flow_level = models.ForeignKey(
        "chargeflows.ChargeFlowLevel",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="attempts",
    )
    payment_link = models.ForeignKey(
        "chargeflows.ChargeFlowLevelPaymentLink",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="attempts",
    )
    # Exactly one attempt per refund (its idempotency key is the refund's as well).
    refund = models.OneToOneField(
        "billing.Refund",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="attempt",
    )
    provider_customer_id = models.CharField(max_length=255)
    provider_payment_method_id = models.CharField(max_length=255)
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    idempotency_key = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    provider_payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    provider_charge_id = models.CharField(max_length=255, blank=True)
    # db_default: the single-statement begin (attempts.BEGIN_SQL) inserts without it.
    provider_refund_id = models.CharField(max_length=255, blank=True, default="", db_default="")
    failure_code = models.CharField(max_length=60, blank=True)
    decline_code = models.CharField(max_length=60, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    hard_decline = models.BooleanField(default=False)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The reconciler's lease (payments.attempts.attempts_reconcile): while it lies in the future
    # one reconciler is asking the provider about this attempt, with no transaction open, and
    # no other may.
    reconciling_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(status__in=["pending", "processing", "unknown"]),
                name="attempt_unsettled",
            ),
            # Refund webhooks find their attempt by the provider's refund id.
            models.Index(
                fields=["provider_refund_id"],
                condition=~Q(provider_refund_id=""),
                name="attempt_provider_refund",
            ),
            # The admin search (payments.selectors.charge_attempt_search).
            models.Index(fields=["provider_customer_id"], name="attempt_provider_customer"),
            # The dashboard's amounts per day (payments.selectors.attempt_amounts_per_day),
            # read from the index alone.
            models.Index(
                fields=["space", "finished_at"],
                include=["purpose", "currency", "amount_minor", "id"],
                condition=Q(status="succeeded"),
                name="attempt_succeeded_by_day",
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=_exactly_one_owner(), name="attempt_one_owner"),
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="attempt_amount_positive"),
        ]

    def __str__(self):
        return f"Attempt {self.idempotency_key} ({self.status})"

    @property
    def owner_id(self):
        for field in OWNER_FIELDS:
            value = getattr(self, f"{field}_id")
            if value is not None:
                return value
        return None


class ProviderEvent(models.Model):
    """A webhook event from the provider, stored once by its id and processed by a task."""

    provider_event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    tries = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    given_up = models.BooleanField(
        default=False, help_text="Every automatic try failed; staff may process it again."
    )
    # When a message for this row was last put on the broker and not yet taken: the beat
    # sweeper does not send another meanwhile (core.tasks.dispatch_due).
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-received_at", "-pk"]
        indexes = [
            models.Index(
                fields=["next_try_at"],
                condition=Q(processed_at__isnull=True, given_up=False),
                name="provider_event_unprocessed",
            ),
        ]

    def __str__(self):
        return f"{self.type} {self.provider_event_id}"


class OutboundEvent(models.Model):
    """An event for a space's webhook, written in the transaction of the change it reports
    and delivered by a task that logs every try (the outbox)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="outbound_events")
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    url = models.URLField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    tries = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(null=True, blank=True)
    given_up = models.BooleanField(default=False)
    # When a message for this row was last put on the broker and not yet taken: the beat
    # sweeper does not send another meanwhile (core.tasks.dispatch_due).
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_try_at"],
                condition=Q(delivered_at__isnull=True, given_up=False),
                name="outbound_event_undelivered",
            ),
        ]

    def __str__(self):
        return f"{self.type} → {self.url}"


class DeliveryAttempt(models.Model):
    """One try to deliver an outbound event: when, what came back, how long it took."""

    event = models.ForeignKey(OutboundEvent, on_delete=models.CASCADE, related_name="deliveries")
    attempted_at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    error = models.CharField(max_length=300, blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["-attempted_at", "-pk"]

    def __str__(self):
        return f"{self.event_id} at {self.attempted_at:%Y-%m-%d %H:%M:%S}"
