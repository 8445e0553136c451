import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper

from core.history import history_records
from spaces.models import Space

from .exceptions import SpaceMismatch

# Provider brand codes -> the names seed 003's lookup key uses.
BRAND_NAMES = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "American Express",
    "american_express": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
    "cartes_bancaires": "Cartes Bancaires",
    "eftpos_au": "eftpos Australia",
    "interac": "Interac",
    "link": "Link",
}


def lookup_key_for(*, customer_number: str, brand: str, last4: str, exp_month: int, exp_year: int):
    """Seed 003's `[CUSTOMER_ID]-[BRAND]-[LAST_FOUR]-[EXP_DATE]`.

    E.g. 0283759-Mastercard-4242-06/25: the customer's own number, the brand as people write
    it, MM/YY."""
    return f"{customer_number}-{brand}-{last4}-{exp_month:02d}/{exp_year % 100:02d}"


def normalise_brand(code: str) -> str:
    """'visa' -> 'Visa', 'amex' -> 'American Express'; unknown codes are title-cased."""
    code = (code or "").strip()
    return BRAND_NAMES.get(code.lower().replace(" ", "_"), code.replace("_", " ").title())


class Customer(models.Model):
    """Someone whose card is kept on file. We keep contact data and the provider's id only."""

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="customers")
    name = models.CharField(max_length=200)
    email = models.EmailField()
    preferred_language = models.CharField(
        max_length=8, choices=settings.LANGUAGES, default=settings.LANGUAGE_CODE
    )
    external_number = models.CharField(
        "external customer number",
        max_length=40,
        blank=True,
        help_text="The customer's id in the ERP or shop, e.g. 0283759.",
    )
    provider_customer_id = models.CharField(
        "provider customer id", max_length=255, blank=True, null=True, unique=True, editable=False
    )
    tags = models.CharField(
        max_length=200,
        blank=True,
        help_text="Comma-separated labels, e.g. 'vip, wholesale' (charge-flow conditions).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = history_records()

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["space", "external_number"],
                condition=~Q(external_number=""),
                name="uniq_customer_external_number_per_space",
            ),
            # Target of the composite foreign keys (cards, issues, invitations, registrations
            # -> (customer, space)) that keep every row in its customer's space; see
            # migrations/0002.
            models.UniqueConstraint(fields=["id", "space"], name="uniq_customer_id_space"),
        ]
        indexes = [
            models.Index(fields=["space", "email"]),
            # The admin list's order, and its search (cards.selectors.customer_search); the
            # name has a trigram index on PostgreSQL (migration 0009).
            models.Index(fields=["name", "id"], name="customer_name_order"),
            models.Index(Upper("email"), name="customer_email_upper"),
            models.Index(fields=["external_number"], name="customer_external_number"),
        ]

    def __str__(self):
        return f"{self.name} <{self.email}>"

    def save(self, *args, **kwargs):
        # A customer's space is fixed at creation: moving it would leave its cards, issues and
        # invitations in the old space. (PostgreSQL refuses it too once it has any of them.)
        if self._space_changed():
            raise SpaceMismatch(code="customer_space_fixed")
        super().save(*args, **kwargs)
        self._loaded_space_id = self.space_id

    @classmethod
    def from_db(cls, db, field_names, values):
        customer = super().from_db(db, field_names, values)
        customer._loaded_space_id = customer.__dict__.get("space_id")
        return customer

    def _space_changed(self) -> bool:
        loaded = getattr(self, "_loaded_space_id", None)
        return loaded is not None and self.pk is not None and loaded != self.space_id

    def clean(self):
        super().clean()
        if self._space_changed():
            raise ValidationError({"space": SpaceMismatch.message})

    @property
    def tag_set(self) -> frozenset[str]:
        return frozenset(tag.strip().lower() for tag in self.tags.split(",") if tag.strip())

    @property
    def customer_number(self) -> str:
        """CUSTOMER_ID of the lookup key: the external number, else our own id."""
        return self.external_number or str(self.pk)


class PaymentCard(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        DETACHED = "detached", "Detached"

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="payment_cards")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="cards")
    provider_payment_method_id = models.CharField(max_length=255, unique=True, editable=False)
    brand = models.CharField(max_length=40)
    last4 = models.CharField("last 4", max_length=4)
    exp_month = models.PositiveSmallIntegerField()
    exp_year = models.PositiveSmallIntegerField()
    fingerprint = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    is_default = models.BooleanField(default=False)
    # Stored (and indexed) so that recurring lines find their card by key without computing it
    # per row. Kept current by the services that change its inputs: registration, the provider
    # sync (card updater), and customer_update (the customer's external number); see
    # lookup_key_refresh().
    lookup_key = models.CharField(max_length=120, blank=True, editable=False)
    # Set when the customer was emailed that this card expires (cards.services
    # payment_card_expiry_warn): the marker that makes the warning once per card.
    expiry_warning_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["customer", "lookup_key"], name="paymentcard_lookup_key"),
            # The admin list's order (newest first) and its search by last 4.
            models.Index(fields=["created_at", "id"], name="paymentcard_created"),
            models.Index(fields=["last4"], name="paymentcard_last4"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["customer"],
                condition=Q(is_default=True),
                name="one_default_card_per_customer",
            ),
            # Target of the issue -> (card, customer, space) composite foreign key.
            models.UniqueConstraint(
                fields=["id", "customer", "space"], name="uniq_paymentcard_id_customer_space"
            ),
        ]

    def __str__(self):
        return f"{self.brand} •••• {self.last4} ({self.expiry})"

    def save(self, *args, **kwargs):
        # A card created without its key (a fixture, a shell) still gets one; changes to an
        # existing card's inputs go through the services, which refresh it.
        if not self.lookup_key and self.customer_id:
            self.lookup_key_refresh()
        super().save(*args, **kwargs)

    @property
    def expiry(self) -> str:
        return f"{self.exp_month:02d}/{self.exp_year % 100:02d}"

    def lookup_key_refresh(self, customer: "Customer | None" = None) -> str:
        """Set lookup_key from the card's and its customer's current data (not saved); returns
        it. Seed 003's `[CUSTOMER_ID]-[BRAND]-[LAST_FOUR]-[EXP_DATE]`, e.g.
        0283759-Mastercard-4242-06/25."""
        customer = customer or self.customer
        self.lookup_key = lookup_key_for(
            customer_number=customer.customer_number,
            brand=self.brand,
            last4=self.last4,
            exp_month=self.exp_month,
            exp_year=self.exp_year,
        )
        return self.lookup_key


class SepaDebitMethod(models.Model):
    """A customer's SEPA Direct Debit account saved at the provider (a mandate for off-session
    debits): a saved method that needs no customer action (charge-flow level step 2).

    Only the provider's id, the bank code, the country and the last 4 of the IBAN are kept:
    never the IBAN. Not a PaymentCard: it has no brand, expiry or lookup key.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DETACHED = "detached", "Detached"

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="sepa_debit_methods")
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="sepa_debit_methods"
    )
    provider_payment_method_id = models.CharField(max_length=255, unique=True, editable=False)
    # The SetupIntent that saved it: a resubmitted page finds the first row again.
    setup_intent_id = models.CharField(max_length=255, unique=True, editable=False)
    country = models.CharField(max_length=2)
    bank_code = models.CharField(max_length=20, blank=True)
    last4 = models.CharField("last 4", max_length=4)
    fingerprint = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "SEPA Direct Debit account"

    def __str__(self):
        return f"SEPA {self.country} {self.bank_code} •••• {self.last4}"


S = SepaDebitMethod.Status
# The one table of a SEPA account's state changes (the provider's attach/detach events).
SEPA_DEBIT_TRANSITIONS: dict[str, frozenset[str]] = {
    S.ACTIVE: frozenset({S.DETACHED}),
    S.DETACHED: frozenset({S.ACTIVE}),
}


class CardInvitation(models.Model):
    """A signed, expiring, single-use link that lets one known customer register a card."""

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="card_invitations")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="invitations")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Invitation for {self.customer}"


class CardRegistration(models.Model):
    """One completed "token -> customer" step, keyed by the provider's SetupIntent.

    The unique setup_intent_id is what makes a resubmitted page or a retried step reuse the
    first result instead of creating a second provider customer or card.
    """

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="card_registrations")
    setup_intent_id = models.CharField(max_length=255, unique=True)
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="registrations")
    # Empty only inside the registering transaction: the row is inserted first so that a
    # concurrent duplicate submission waits on its unique setup_intent_id (see services).
    card = models.ForeignKey(
        PaymentCard, null=True, on_delete=models.PROTECT, related_name="registrations"
    )
    invitation = models.OneToOneField(
        CardInvitation, null=True, blank=True, on_delete=models.PROTECT, related_name="registration"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Registration {self.setup_intent_id}"


class CardEvent(models.Model):
    """Audit trail of who changed which card is charged, and the outbox for "card registered".

    Written in the same transaction as the change; card_registered events are dispatched on
    commit (and re-dispatched by a beat sweeper if that message was lost).
    """

    class Kind(models.TextChoices):
        CARD_REGISTERED = "card_registered", "Card registered"
        INVITATION_SENT = "invitation_sent", "Registration link sent"
        CARD_EXPIRED = "card_expired", "Card expired"
        EXPIRY_WARNING_SENT = "expiry_warning_sent", "Card expiry warning sent"
        CARD_UPDATED = "card_updated", "Card updated by the provider"
        CARD_DETACHED = "card_detached", "Card detached at the provider"
        CARD_ATTACHED = "card_attached", "Card attached again at the provider"
        CUSTOMER_NUMBER_CHANGED = "customer_number_changed", "Customer number changed"
        CARD_KEPT = "card_kept", "Card kept from a payment page (new default)"
        SEPA_DEBIT_ADDED = "sepa_debit_added", "SEPA Direct Debit account added"
        SEPA_DEBIT_DETACHED = "sepa_debit_detached", "SEPA account detached at the provider"
        SEPA_DEBIT_ATTACHED = "sepa_debit_attached", "SEPA account attached again at the provider"

    space = models.ForeignKey(Space, on_delete=models.PROTECT, related_name="card_events")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="events")
    card = models.ForeignKey(
        PaymentCard, null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    acting_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty when the customer acted on a hosted page or the system did.",
    )
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # When a message for this row was last put on the broker and not yet taken: the beat
    # sweeper does not send another meanwhile (core.tasks.dispatch_due).
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(kind="card_registered", dispatched_at__isnull=True),
                name="card_event_undispatched",
            )
        ]

    def __str__(self):
        return f"{self.get_kind_display()} – {self.customer}"
