from django.conf import settings
from django.db import models


class Space(models.Model):
    """The tenant: every domain row belongs to exactly one space."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    default_currency = models.CharField(
        max_length=3, default="EUR", help_text="ISO 4217 code used when none is given."
    )
    public_card_registration = models.BooleanField(
        default=True,
        help_text="Anyone with the space's public link may register a card. Invitation links "
        "work either way.",
    )
    max_charge_minor = models.BigIntegerField(
        "maximum charge (minor units)",
        default=1_000_000,
        help_text="Largest amount one charge may have, in minor units of the charged currency "
        "(1000000 = 10,000.00 EUR, or 1,000,000 JPY).",
    )
    webhook_url = models.URLField(
        blank=True,
        help_text="Receives signed JSON events when a charging issue succeeds or fails.",
    )
    webhook_secret = models.CharField(
        max_length=64,
        blank=True,
        help_text="Shared secret for the webhook signature (HMAC-SHA256).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


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
