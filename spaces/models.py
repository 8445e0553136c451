import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from core.history import history_records
from core.money import CURRENCY_CHOICES
from core.outbound import UnsafeURL, public_url_check


def webhook_secret_new() -> str:
    """A fresh webhook signing secret: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def validate_webhook_url(url: str) -> None:
    """https only (unless WEBHOOK_ALLOW_HTTP), and the host must resolve to public addresses
    only: never our own network. Delivery checks again (see billing.notifications)."""
    try:
        public_url_check(url)
    except UnsafeURL as exc:
        raise ValidationError(exc.message, code=exc.code) from None


class Space(models.Model):
    """The tenant: every domain row belongs to exactly one space."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    default_currency = models.CharField(
        max_length=3,
        choices=CURRENCY_CHOICES,
        default="EUR",
        help_text="ISO 4217 code used when none is given.",
    )
    public_card_registration = models.BooleanField(
        default=True,
        help_text="Anyone with the space's public link may register a card. Invitation links "
        "work either way.",
    )
    max_charge_minor = models.BigIntegerField(
        "maximum charge (minor units)",
        default=1_000_000,
        validators=[MinValueValidator(1)],
        help_text="Largest amount one charge may have, in minor units of the charged currency "
        "(1000000 = 10,000.00 EUR, or 1,000,000 JPY), for every currency without its own "
        "maximum below.",
    )
    refund_threshold_minor = models.BigIntegerField(
        "refunds without approval up to (minor units)",
        default=0,
        # Rows written without it (older migrations' states, SQL fills) get the safe default.
        db_default=0,
        validators=[MinValueValidator(0)],
        help_text="Refunds up to this amount, in minor units of the space's default currency "
        "(5000 = 50.00 EUR), are made at once; larger ones, and every refund in another "
        "currency, wait for an approver who did not request them. 0: every refund waits.",
    )
    webhook_url = models.URLField(
        blank=True,
        validators=[validate_webhook_url],
        help_text="Receives signed JSON events when a charging issue succeeds or fails. "
        "https only; it must be reachable on the public internet.",
    )
    # Generated, never typed in and never shown again after the message that follows its
    # creation or rotation (see spaces.services.space_webhook_secret_rotate).
    webhook_secret = models.CharField(
        max_length=64,
        default=webhook_secret_new,
        editable=False,
        help_text="Shared secret for the webhook signature (HMAC-SHA256).",
    )
    card_expiry_warning_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Days before a card's expiry month ends its customer is emailed a link to "
        "register a new card. Empty: CARD_EXPIRY_WARNING_DAYS.",
    )
    notification_texts = models.JSONField(
        "default notification wording",
        default=dict,
        # Also in the database: rows written by code that predates the column get {} too.
        db_default=models.Value({}, output_field=models.JSONField()),
        blank=True,
        help_text='Per language, what the clerk\'s charge notification starts from: {"en": '
        '{"subject": "...", "body": "..."}, "de": {...}}. No greeting in the body: the email '
        "greets the customer by name itself. Empty: the built-in wording.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The signing secret is never copied into history: it would be readable there.
    history = history_records(excluded_fields=["webhook_secret"])

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_charge_minor__gt=0), name="space_max_charge_positive"
            ),
            models.CheckConstraint(
                condition=~Q(webhook_secret=""), name="space_webhook_secret_set"
            ),
            models.CheckConstraint(
                condition=Q(refund_threshold_minor__gte=0), name="space_refund_threshold_ge_0"
            ),
        ]

    def __str__(self):
        return self.name

    def max_charge_for(self, currency: str) -> int:
        """The largest amount (minor units) one charge in `currency` may have: the currency's
        own maximum if the space set one, else max_charge_minor."""
        limit = self.charge_limits.filter(currency=currency.upper()).first()
        return limit.max_charge_minor if limit else self.max_charge_minor


class SpaceChargeLimit(models.Model):
    """A space's maximum charge in one currency (minor units of that currency)."""

    space = models.ForeignKey(Space, on_delete=models.CASCADE, related_name="charge_limits")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    max_charge_minor = models.BigIntegerField(
        "maximum charge (minor units)",
        validators=[MinValueValidator(1)],
        help_text="E.g. 1000000 = 10,000.00 EUR, or 1,000,000 JPY.",
    )
    history = history_records()

    class Meta:
        verbose_name = "maximum charge per currency"
        verbose_name_plural = "maximum charges per currency"
        ordering = ["currency"]
        constraints = [
            models.UniqueConstraint(fields=["space", "currency"], name="uniq_space_charge_limit"),
            models.CheckConstraint(
                condition=Q(max_charge_minor__gt=0), name="space_charge_limit_positive"
            ),
        ]

    def __str__(self):
        return f"{self.currency} {self.max_charge_minor}"


class SpaceEvent(models.Model):
    """Audit trail of changes to a space's settings that staff cannot see afterwards (the
    webhook secret) or that decide who must approve money moving (the refund threshold): who,
    when, what. Written by services in the same transaction."""

    class Action(models.TextChoices):
        WEBHOOK_SECRET_ROTATED = "webhook_secret_rotated", "Webhook secret rotated"
        REFUND_THRESHOLD_CHANGED = "refund_threshold_changed", "Refund threshold changed"

    space = models.ForeignKey(Space, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=40, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"{self.get_action_display()} – {self.space}"


class SpaceMembership(models.Model):
    """Which staff user works in which space. The role is the user's group (see roles.py)."""

    space = models.ForeignKey(Space, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="space_memberships"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["space", "user"], name="uniq_space_membership"),
        ]

    def __str__(self):
        return f"{self.user} in {self.space}"
