"""Card registration: the hosted page's "token -> customer" step, invitations, card events."""

import logging
from datetime import date, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.http import urlsafe_base64_encode
from django.utils.translation import gettext_lazy

from core.history import history_acting
from core.tasks import dispatch, dispatch_due
from payments import gateway
from spaces.models import Space

from .exceptions import (
    InvitationExpired,
    InvitationInvalid,
    InvitationUsed,
    ProviderUnavailable,
    RegistrationRefused,
)
from .models import (
    SEPA_DEBIT_TRANSITIONS,
    CardEvent,
    CardInvitation,
    CardRegistration,
    Customer,
    PaymentCard,
    SepaDebitMethod,
    normalise_brand,
)
from .selectors import card_expiry_end, payment_cards_expiring
from .signals import (
    card_registered,
    customer_number_changed,
    payment_card_added,
    payment_card_lookup_key_changed,
    payment_card_removed,
)
from .tokens import invitation_token_generator

logger = logging.getLogger(__name__)

INVITATION_VALID_FOR = timedelta(days=7)


# --- The hosted page --------------------------------------------------------------------------


def registration_setup_intent_start(
    *, space: Space, invitation: CardInvitation | None = None
) -> gateway.SetupIntent:
    """Ask the provider for a SetupIntent the browser confirms with the card (off-session use).

    The space (and invitation) are written into its metadata so a confirmed SetupIntent can
    only complete a registration on the page it was made for.
    """
    metadata = {"space": str(space.pk)}
    if invitation is not None:
        metadata["invitation"] = str(invitation.public_id)
    try:
        return gateway.setup_intent_create(metadata=metadata)
    except gateway.ProviderError as exc:
        logger.warning("setup intent create failed: %s", exc.__class__.__name__)
        raise ProviderUnavailable() from exc


def card_registration_complete(
    *,
    space: Space,
    setup_intent_id: str,
    name: str = "",
    email: str = "",
    language: str = "",
    invitation: CardInvitation | None = None,
) -> CardRegistration:
    """The automatic step "token -> customer".

    From a SetupIntent the customer's browser confirmed, create (or reuse) the provider
    customer, attach the card as its default, and keep only brand, last 4, expiry and
    fingerprint. Exactly once per SetupIntent: a resubmitted page or a retried step returns
    the first registration and never makes a second provider customer or card.

    A SetupIntent completes only the page it was made for: its provider metadata must name
    this space and invitation (none for the public page), and one already registered is
    returned only to the same space, invitation and (public page) email; anything else is
    refused and changes nothing. A card whose expiry month has passed is refused before
    anything is created for it at the provider or here.

    The returned registration's `is_new` says whether this call made it (pages remember only
    the registrations they made, see cards.views.done).
    """
    existing = _registration_for(setup_intent_id, space=space, invitation=invitation, email=email)
    if existing is not None:
        # Its metadata was checked at the provider when it was made, for this same page.
        existing.is_new = False
        return existing

    intent = _verified_setup_intent(setup_intent_id, space=space, invitation=invitation)
    details = _unexpired_card(intent)
    try:
        registration = _register(
            space=space,
            intent=intent,
            details=details,
            name=name,
            email=email,
            language=language,
            invitation=invitation,
        )
    except IntegrityError:
        # A concurrent submission of the same SetupIntent committed first: use its result.
        existing = _registration_for(
            setup_intent_id, space=space, invitation=invitation, email=email
        )
        if existing is None:
            raise
        existing.is_new = False
        return existing
    registration.is_new = True
    return registration


SETUP_INTENT_FOREIGN_MESSAGE = gettext_lazy(
    "This card confirmation was made on another registration page, so it cannot be used here. "
    "Nothing was saved; please enter your card again."
)


def _registration_for(
    setup_intent_id: str, *, space: Space, invitation: CardInvitation | None, email: str
) -> CardRegistration | None:
    registration = (
        CardRegistration.objects.select_related("customer", "card")
        .filter(setup_intent_id=setup_intent_id)
        .first()
    )
    if registration is None:
        return None
    if registration.space_id != space.pk:
        raise RegistrationRefused(SETUP_INTENT_FOREIGN_MESSAGE, code="setup_intent_other_space")
    if registration.invitation_id != (invitation.pk if invitation else None):
        raise RegistrationRefused(
            SETUP_INTENT_FOREIGN_MESSAGE, code="setup_intent_other_invitation"
        )
    # The public page names its customer in the form: a replay of the same page carries the
    # same email; another one would be handed someone else's registration.
    if invitation is None and registration.customer.email.casefold() != email.casefold():
        raise RegistrationRefused(SETUP_INTENT_FOREIGN_MESSAGE, code="setup_intent_other_customer")
    return registration


def _verified_setup_intent(setup_intent_id, *, space, invitation) -> gateway.SetupIntent:
    try:
        intent = gateway.setup_intent_retrieve(setup_intent_id)
    except gateway.InvalidRequestError as exc:
        raise RegistrationRefused(code="setup_intent_unknown") from exc
    except gateway.ProviderError as exc:
        raise ProviderUnavailable() from exc
    expected_invitation = str(invitation.public_id) if invitation else None
    if (
        intent.metadata.get("space") != str(space.pk)
        or intent.metadata.get("invitation") != expected_invitation
    ):
        raise RegistrationRefused(SETUP_INTENT_FOREIGN_MESSAGE, code="setup_intent_foreign")
    if intent.status != "succeeded" or not intent.payment_method_id:
        raise RegistrationRefused(code=f"setup_intent_{intent.status}")
    return intent


def _unexpired_card(intent: gateway.SetupIntent) -> gateway.CardDetails:
    """The confirmed card's details, refused when its expiry month has passed.

    Stripe declines an expired card when the SetupIntent is confirmed, but a stand-in (or a
    card confirmed just before the month turned) may not: checked here before a provider
    customer is made or the card attached, so nothing references it at the provider or here.
    """
    try:
        details = gateway.payment_method_retrieve(intent.payment_method_id)
    except gateway.ProviderError as exc:
        logger.warning(
            "card registration %s failed at the provider: %s", intent.id, exc.__class__.__name__
        )
        raise ProviderUnavailable() from exc
    today = timezone.localdate()
    if (details.exp_year, details.exp_month) < (today.year, today.month):
        raise RegistrationRefused(
            gettext_lazy(
                "This card expired in %(expiry)s. Nothing was saved; please use a card that is "
                "still valid."
            )
            % {"expiry": f"{details.exp_month:02d}/{details.exp_year % 100:02d}"},
            code="card_expired",
        )
    return details


def _register(*, space, intent, details, name, email, language, invitation) -> CardRegistration:
    # One transaction around the provider calls. This is not money: holding the lock for the
    # few calls serialises duplicate submissions (they wait on the unique setup_intent_id
    # inserted first) and a failure rolls back everything we stored. Provider objects left by a
    # crash are found again by their metadata marker before anything is created twice.
    with transaction.atomic():
        if invitation is not None:
            invitation = CardInvitation.objects.select_for_update().get(pk=invitation.pk)
            if invitation.used_at is not None:
                raise InvitationUsed()
            customer = Customer.objects.select_for_update().get(pk=invitation.customer_id)
            if invitation.space_id != space.pk or customer.space_id != space.pk:
                # An invitation (and its customer) registers cards in its own space only.
                raise RegistrationRefused(code="invitation_other_space")
        else:
            customer = Customer.objects.create(
                space=space,
                name=name,
                email=email,
                preferred_language=_language(language),
            )
        registration = CardRegistration.objects.create(
            space=space, setup_intent_id=intent.id, customer=customer, invitation=invitation
        )

        try:
            if not customer.provider_customer_id:
                customer.provider_customer_id = _provider_customer(customer, intent.id)
                customer.save(update_fields=["provider_customer_id", "updated_at"])
            if details.customer_id not in (None, customer.provider_customer_id):
                raise RegistrationRefused(code="payment_method_other_customer")
            if details.customer_id is None:
                gateway.payment_method_attach(
                    payment_method_id=details.payment_method_id,
                    customer_id=customer.provider_customer_id,
                )
            gateway.customer_set_default_payment_method(
                customer_id=customer.provider_customer_id,
                payment_method_id=details.payment_method_id,
            )
        except gateway.CardError as exc:
            raise RegistrationRefused(exc.user_message or None, code="card_declined") from exc
        except gateway.ProviderError as exc:
            logger.warning(
                "card registration %s failed at the provider: %s",
                intent.id,
                exc.__class__.__name__,
            )
            raise ProviderUnavailable() from exc

        PaymentCard.objects.filter(customer=customer, is_default=True).update(is_default=False)
        card = PaymentCard.objects.create(
            space=space,
            customer=customer,
            provider_payment_method_id=details.payment_method_id,
            brand=normalise_brand(details.brand),
            last4=details.last4,
            exp_month=details.exp_month,
            exp_year=details.exp_year,
            fingerprint=details.fingerprint,
            is_default=True,
            lookup_key=PaymentCard(
                brand=normalise_brand(details.brand),
                last4=details.last4,
                exp_month=details.exp_month,
                exp_year=details.exp_year,
            ).lookup_key_refresh(customer),
        )
        payment_card_added.send(sender=PaymentCard, card=card)
        registration.card = card
        registration.save(update_fields=["card"])
        if invitation is not None:
            invitation.used_at = timezone.now()
            invitation.save(update_fields=["used_at"])
        event = CardEvent.objects.create(
            space=space,
            kind=CardEvent.Kind.CARD_REGISTERED,
            customer=customer,
            card=card,
            detail={
                "registration": str(registration.public_id),
                "via": "invitation" if invitation else "public page",
                "lookup_key": card.lookup_key,
            },
        )
        transaction.on_commit(lambda: _dispatch_later(event.pk))
    return registration


def _provider_customer(customer: Customer, setup_intent_id: str) -> str:
    marker = {"backoffice_setup_intent": setup_intent_id}
    found = gateway.customer_find(
        email=customer.email,
        metadata_key="backoffice_setup_intent",
        metadata_value=setup_intent_id,
    )
    if found:
        return found
    return gateway.customer_create(
        name=customer.name,
        email=customer.email,
        locale=customer.preferred_language,
        metadata={**marker, "backoffice_space": str(customer.space_id)},
        idempotency_key=f"card-registration-{setup_intent_id}-customer",
    )


def _language(code: str) -> str:
    known = {lang for lang, _ in settings.LANGUAGES}
    code = (code or "").split("-")[0].lower()
    return code if code in known else settings.LANGUAGE_CODE


def _dispatch_later(event_id: int) -> None:
    from .tasks import card_event_dispatch

    # On commit of the registration: a broker outage is logged, never shown to the customer,
    # and card_events_redispatch sends it.
    dispatch(card_event_dispatch, event_id, mark=CardEvent.objects.filter(pk=event_id))


# --- Card events ------------------------------------------------------------------------------


def card_event_dispatch(*, event_id: int) -> bool:
    """Hand a "card registered" event to its receivers once. True if this call dispatched it."""
    with transaction.atomic():
        event = (
            CardEvent.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("customer", "card", "space")
            .filter(pk=event_id, kind=CardEvent.Kind.CARD_REGISTERED, dispatched_at__isnull=True)
            .first()
        )
        if event is None:
            return False
        card_registered.send(sender=CardEvent, event=event)
        event.dispatched_at = timezone.now()
        event.save(update_fields=["dispatched_at"])
    return True


def card_events_redispatch(*, older_than: timedelta = timedelta(minutes=2)) -> int:
    """Beat: send dispatch messages for undispatched events with none queued (a dispatch that
    failed, a message the broker lost); returns how many."""
    from .tasks import card_event_dispatch

    due = CardEvent.objects.filter(
        kind=CardEvent.Kind.CARD_REGISTERED,
        dispatched_at__isnull=True,
        created_at__lt=timezone.now() - older_than,
    )
    return dispatch_due(card_event_dispatch, due, limit=500)


def payment_cards_expire(*, today=None) -> int:
    """Mark active cards whose expiry month has passed as expired, with an event each."""
    today = today or timezone.localdate()
    expired = 0
    candidates = PaymentCard.objects.filter(
        status=PaymentCard.Status.ACTIVE, exp_year__lte=today.year
    ).select_related("customer")
    for card in candidates.iterator():
        if (card.exp_year, card.exp_month) >= (today.year, today.month):
            continue
        with transaction.atomic():
            updated = PaymentCard.objects.filter(
                pk=card.pk, status=PaymentCard.Status.ACTIVE
            ).update(status=PaymentCard.Status.EXPIRED)
            if updated:
                CardEvent.objects.create(
                    space_id=card.space_id,
                    kind=CardEvent.Kind.CARD_EXPIRED,
                    customer_id=card.customer_id,
                    card=card,
                    detail={"expiry": card.expiry},
                )
                card.status = PaymentCard.Status.EXPIRED
                payment_card_removed.send(sender=PaymentCard, card=card)
                expired += 1
    return expired


# --- Expiry warnings --------------------------------------------------------------------------


def payment_card_expiry_warnings_send(*, today: date | None = None) -> int:
    """Beat: every card expiring within its space's window, not yet warned, gets one email
    to its customer with a registration link. Safe to run twice or concurrently."""
    return sum(
        payment_card_expiry_warn(card_id=card.pk, today=today)
        for card in payment_cards_expiring(today=today)
        if card.expiry_warning_sent_at is None
    )


def payment_card_expiry_warn(*, card_id: int, today: date | None = None) -> bool:
    """One card's expiry warning: a single-use registration invitation, the card marked warned
    and an event, in one transaction; the email goes out on commit. At most once per card
    (and expiry): the marker is checked under the row lock, a second beat skips the row."""
    with transaction.atomic():
        card = (
            PaymentCard.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("customer")
            .filter(pk=card_id, status=PaymentCard.Status.ACTIVE, expiry_warning_sent_at=None)
            .first()
        )
        if card is None:
            return False
        invitation = card_invitation_send(customer=card.customer, acting_user=None, email=False)
        card.expiry_warning_sent_at = timezone.now()
        card.save(update_fields=["expiry_warning_sent_at"])
        CardEvent.objects.create(
            space_id=card.space_id,
            kind=CardEvent.Kind.EXPIRY_WARNING_SENT,
            customer_id=card.customer_id,
            card=card,
            detail={
                "expiry": card.expiry,
                "invitation": str(invitation.public_id),
                "to": card.customer.email,
            },
        )
        transaction.on_commit(lambda: _expiry_warning_email_later(card.pk, invitation.pk))
    return True


def _expiry_warning_email_later(card_id: int, invitation_id: int) -> None:
    from .tasks import payment_card_expiry_warning_email

    dispatch(payment_card_expiry_warning_email, card_id, invitation_id)


def payment_card_expiry_warning_email_send(*, card_id: int, invitation_id: int) -> None:
    card = PaymentCard.objects.select_related("customer", "space").get(pk=card_id)
    invitation = CardInvitation.objects.get(pk=invitation_id, customer_id=card.customer_id)
    if invitation.used_at is not None or invitation.expires_at <= timezone.now():
        return
    customer = card.customer
    context = {
        "customer": customer,
        "space": card.space,
        "card": card,
        "expiry_end": card_expiry_end(card),
        "url": card_invitation_url(invitation),
        "expires_at": invitation.expires_at,
    }
    with translation.override(customer.preferred_language):
        subject = render_to_string("cards/emails/expiry_warning_subject.txt", context).strip()
        text = render_to_string("cards/emails/expiry_warning.txt", context)
        html = render_to_string("cards/emails/expiry_warning.html", context)
    message = EmailMultiAlternatives(subject, text, to=[customer.email])
    message.attach_alternative(html, "text/html")
    message.send()


# --- Provider events --------------------------------------------------------------------------


# --- SEPA Direct Debit ----------------------------------------------------------------------
#
# The IBAN goes from the customer's browser to the provider only (Stripe.js
# confirmSepaDebitSetup confirms the SetupIntent, which also records the mandate); we are
# handed the SetupIntent id and keep the provider's id, bank code, country and last 4.


def sepa_debit_setup_intent_start(*, invitation: CardInvitation) -> gateway.SetupIntent:
    """A SetupIntent for a SEPA Direct Debit mandate, made for this invitation's page (its
    metadata names space and invitation, checked again when it is completed)."""
    try:
        return gateway.setup_intent_create(
            metadata={"space": str(invitation.space_id), "invitation": str(invitation.public_id)},
            payment_method_type="sepa_debit",
        )
    except gateway.ProviderError as exc:
        logger.warning("sepa setup intent create failed: %s", exc.__class__.__name__)
        raise ProviderUnavailable() from exc


def sepa_debit_method_add(*, invitation: CardInvitation, setup_intent_id: str) -> SepaDebitMethod:
    """Save the SEPA Direct Debit account the customer confirmed in the browser as a saved
    method of the invitation's customer, audited with a CardEvent.

    Exactly once per SetupIntent: a resubmission returns the first row. A SetupIntent made
    for another page, not succeeded, or not for a sepa_debit method is refused and changes
    nothing. The invitation stays usable for the card (adding a bank account does not use it).
    """
    existing = SepaDebitMethod.objects.filter(setup_intent_id=setup_intent_id).first()
    if existing is not None:
        if existing.customer_id != invitation.customer_id:
            raise RegistrationRefused(SETUP_INTENT_FOREIGN_MESSAGE, code="setup_intent_foreign")
        return existing
    intent = _verified_setup_intent(setup_intent_id, space=invitation.space, invitation=invitation)
    try:
        details = gateway.sepa_debit_retrieve(intent.payment_method_id)
    except gateway.ProviderError as exc:
        raise ProviderUnavailable() from exc
    if details is None:
        raise RegistrationRefused(code="not_sepa_debit")
    with transaction.atomic():
        # The customer's lock serialises a double submission: the second finds the first row.
        customer = Customer.objects.select_for_update().get(pk=invitation.customer_id)
        existing = SepaDebitMethod.objects.filter(setup_intent_id=setup_intent_id).first()
        if existing is not None:
            return existing
        try:
            if not customer.provider_customer_id:
                customer.provider_customer_id = _provider_customer(customer, intent.id)
                customer.save(update_fields=["provider_customer_id", "updated_at"])
            if details.customer_id not in (None, customer.provider_customer_id):
                raise RegistrationRefused(code="payment_method_other_customer")
            if details.customer_id is None:
                gateway.payment_method_attach(
                    payment_method_id=details.payment_method_id,
                    customer_id=customer.provider_customer_id,
                )
        except gateway.ProviderError as exc:
            logger.warning(
                "sepa debit %s failed at the provider: %s", intent.id, exc.__class__.__name__
            )
            raise ProviderUnavailable() from exc
        method = _sepa_debit_method_create(
            customer=customer, details=details, setup_intent_id=intent.id, via="invitation"
        )
    return method


def _sepa_debit_method_create(
    *, customer: Customer, details: gateway.SepaDebitDetails, setup_intent_id: str, via: str
) -> SepaDebitMethod:
    """The row of a SEPA account attached to the customer at the provider, and its audit event,
    in the caller's transaction (which holds the customer's lock)."""
    method = SepaDebitMethod.objects.create(
        space_id=customer.space_id,
        customer=customer,
        provider_payment_method_id=details.payment_method_id,
        setup_intent_id=setup_intent_id,
        country=details.country,
        bank_code=details.bank_code,
        last4=details.last4,
        fingerprint=details.fingerprint,
    )
    CardEvent.objects.create(
        space_id=customer.space_id,
        kind=CardEvent.Kind.SEPA_DEBIT_ADDED,
        customer=customer,
        detail={
            "sepa_debit_method": method.pk,
            "via": via,
            "country": method.country,
            "bank_code": method.bank_code,
            "last4": method.last4,
        },
    )
    return method


def sepa_debit_method_keep(
    *, customer: Customer, payment_method_id: str, setup_intent_id: str, via: str
) -> SepaDebitMethod:
    """A SEPA account the customer paid with on a hosted page (already attached to their
    provider customer) is kept as their saved SEPA method, audited with a CardEvent. Keeping
    it again changes nothing; an account that is not SEPA or not theirs is refused."""
    existing = SepaDebitMethod.objects.filter(provider_payment_method_id=payment_method_id).first()
    if existing is not None:
        return existing
    details = gateway.sepa_debit_retrieve(payment_method_id)
    if details is None:
        raise RegistrationRefused(code="not_sepa_debit")
    if details.customer_id != customer.provider_customer_id:
        raise RegistrationRefused(code="payment_method_other_customer")
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        existing = SepaDebitMethod.objects.filter(
            provider_payment_method_id=payment_method_id
        ).first()
        if existing is not None:
            return existing
        return _sepa_debit_method_create(
            customer=customer, details=details, setup_intent_id=setup_intent_id, via=via
        )


def sepa_debit_sync_from_provider(*, payment_method_id: str) -> bool:
    """A provider event about a SEPA account of ours: it is active while attached to its
    customer at the provider, detached otherwise (read again from the provider, so events in
    any order end in its current state), audited with a CardEvent. True if it changed."""
    method = SepaDebitMethod.objects.filter(provider_payment_method_id=payment_method_id).first()
    if method is None:
        return False
    details = gateway.sepa_debit_retrieve(payment_method_id)
    with transaction.atomic():
        method = SepaDebitMethod.objects.select_for_update().get(pk=method.pk)
        customer = Customer.objects.get(pk=method.customer_id)
        attached = details is not None and details.customer_id == customer.provider_customer_id
        wanted = SepaDebitMethod.Status.ACTIVE if attached else SepaDebitMethod.Status.DETACHED
        if wanted == method.status or wanted not in SEPA_DEBIT_TRANSITIONS[method.status]:
            return False
        method.status = wanted
        method.save(update_fields=["status"])
        CardEvent.objects.create(
            space_id=method.space_id,
            kind=(
                CardEvent.Kind.SEPA_DEBIT_ATTACHED
                if attached
                else CardEvent.Kind.SEPA_DEBIT_DETACHED
            ),
            customer=customer,
            detail={"sepa_debit_method": method.pk, "last4": method.last4},
        )
    return True


def payment_card_keep(*, customer: Customer, payment_method_id: str, via: str) -> PaymentCard:
    """A card the customer paid with on a hosted page (already attached to their provider
    customer) is kept for future charges as their default card, audited with a CardEvent.
    Keeping it again changes nothing. It starts no charging issue (not a registration)."""
    existing = PaymentCard.objects.filter(provider_payment_method_id=payment_method_id).first()
    if existing is not None:
        return existing
    details = gateway.payment_method_retrieve(payment_method_id)
    if details.customer_id != customer.provider_customer_id:
        raise RegistrationRefused(code="payment_method_other_customer")
    gateway.customer_set_default_payment_method(
        customer_id=customer.provider_customer_id, payment_method_id=payment_method_id
    )
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        PaymentCard.objects.filter(customer=customer, is_default=True).update(is_default=False)
        card = PaymentCard.objects.create(
            space_id=customer.space_id,
            customer=customer,
            provider_payment_method_id=payment_method_id,
            brand=normalise_brand(details.brand),
            last4=details.last4,
            exp_month=details.exp_month,
            exp_year=details.exp_year,
            fingerprint=details.fingerprint,
            is_default=True,
        )
        CardEvent.objects.create(
            space_id=customer.space_id,
            kind=CardEvent.Kind.CARD_KEPT,
            customer=customer,
            card=card,
            detail={"via": via, "lookup_key": card.lookup_key},
        )
        # Inside the transaction, like every new card: recurring lines waiting for this
        # card's lookup key get it in the same commit.
        payment_card_added.send(sender=PaymentCard, card=card)
    return card


def payment_card_sync_from_provider(*, payment_method_id: str, event_type: str) -> bool:
    """A provider event about a card (attached, detached, updated, or the card updater's new
    expiry or number): make our PaymentCard what the provider holds now, audited with a
    CardEvent in the same transaction. True if the card changed.

    The card is read again from the provider rather than taken from the event, so events
    applied in any order (or again) end in the same state: the provider's current one.
    """
    card = PaymentCard.objects.filter(provider_payment_method_id=payment_method_id).first()
    if card is None:
        return False  # not a card of ours (or not yet registered: registration reads it)
    details = gateway.payment_method_retrieve(payment_method_id)
    with transaction.atomic():
        card = PaymentCard.objects.select_for_update().get(pk=card.pk)
        customer = Customer.objects.get(pk=card.customer_id)
        attached = details.customer_id is not None and (
            details.customer_id == customer.provider_customer_id
        )
        before = {
            "brand": card.brand,
            "last4": card.last4,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "fingerprint": card.fingerprint,
        }
        after = {
            "brand": normalise_brand(details.brand),
            "last4": details.last4,
            "exp_month": details.exp_month,
            "exp_year": details.exp_year,
            "fingerprint": details.fingerprint or card.fingerprint,
        }
        kind = None
        status_before = card.status
        key_before = card.lookup_key
        if not attached:
            if card.status != PaymentCard.Status.DETACHED:
                card.status = PaymentCard.Status.DETACHED
                card.is_default = False
                kind = CardEvent.Kind.CARD_DETACHED
        else:
            if after != before:
                for field, value in after.items():
                    setattr(card, field, value)
                kind = CardEvent.Kind.CARD_UPDATED
                if (after["exp_year"], after["exp_month"]) != (
                    before["exp_year"],
                    before["exp_month"],
                ):
                    card.expiry_warning_sent_at = None  # the new expiry gets its own warning
            today = timezone.localdate()
            live = (card.exp_year, card.exp_month) >= (today.year, today.month)
            if card.status == PaymentCard.Status.DETACHED:
                card.status = PaymentCard.Status.ACTIVE if live else PaymentCard.Status.EXPIRED
                kind = kind or CardEvent.Kind.CARD_ATTACHED
            elif card.status == PaymentCard.Status.EXPIRED and live:
                card.status = PaymentCard.Status.ACTIVE
        if kind is None:
            return False
        card.lookup_key_refresh(customer)
        card.save()
        CardEvent.objects.create(
            space_id=card.space_id,
            kind=kind,
            customer_id=card.customer_id,
            card=card,
            detail={
                "provider_event": event_type,
                "before": before,
                "after": after if attached else {},
                "lookup_key": {"before": key_before, "after": card.lookup_key},
            },
        )
        # Inside the transaction: recurring lines follow the card in the same commit.
        if card.lookup_key != key_before:
            payment_card_lookup_key_changed.send(sender=PaymentCard, card=card, old_key=key_before)
        live = PaymentCard.Status.ACTIVE
        if status_before == live and card.status != live:
            payment_card_removed.send(sender=PaymentCard, card=card)
        elif status_before != live and card.status == live:
            payment_card_added.send(sender=PaymentCard, card=card)
    return True


# --- Customers --------------------------------------------------------------------------------


def customer_update(*, customer: Customer, acting_user) -> Customer:
    """Save staff's edit of a customer. The external number is the CUSTOMER_ID of its cards'
    lookup keys: when it changes, the cards' stored keys change with it (and recurring lines
    keyed by the old number follow, through customer_number_changed), audited in the same
    transaction."""
    # history_acting: the customer's history row and those of the recurring lines that move
    # with its number (a receiver's writes) name the acting user.
    with transaction.atomic(), history_acting(acting_user):
        old = Customer.objects.select_for_update().get(pk=customer.pk)
        customer.save()
        old_number, new_number = old.customer_number, customer.customer_number
        if old_number == new_number:
            return customer
        for card in PaymentCard.objects.select_for_update().filter(customer=customer):
            old_key = card.lookup_key
            card.lookup_key_refresh(customer)
            card.save(update_fields=["lookup_key"])
            payment_card_lookup_key_changed.send(sender=PaymentCard, card=card, old_key=old_key)
        CardEvent.objects.create(
            space_id=customer.space_id,
            kind=CardEvent.Kind.CUSTOMER_NUMBER_CHANGED,
            customer=customer,
            acting_user=acting_user,
            detail={"before": old_number, "after": new_number},
        )
        customer_number_changed.send(
            sender=Customer, customer=customer, old_number=old_number, new_number=new_number
        )
    return customer


# --- Invitations ------------------------------------------------------------------------------


def card_invitation_send(*, customer: Customer, acting_user, email: bool = True) -> CardInvitation:
    """Create a single-use, expiring registration link for a known customer and email it
    (email=False: the caller sends the link in its own email, e.g. recurring's reminder)."""
    with transaction.atomic():
        invitation = CardInvitation.objects.create(
            space_id=customer.space_id,
            customer=customer,
            created_by=acting_user,
            expires_at=timezone.now() + INVITATION_VALID_FOR,
        )
        CardEvent.objects.create(
            space_id=customer.space_id,
            kind=CardEvent.Kind.INVITATION_SENT,
            customer=customer,
            acting_user=acting_user,
            detail={"invitation": str(invitation.public_id), "to": customer.email},
        )
        if email:
            transaction.on_commit(lambda: _email_later(invitation.pk))
    return invitation


def _email_later(invitation_id: int) -> None:
    from .tasks import card_invitation_email

    dispatch(card_invitation_email, invitation_id)


def card_invitation_url(invitation: CardInvitation) -> str:
    path = reverse(
        "cards:invitation",
        kwargs={
            "invitation_ref": urlsafe_base64_encode(invitation.public_id.bytes),
            "token": invitation_token_generator.make_token(invitation),
        },
    )
    return settings.PUBLIC_BASE_URL.rstrip("/") + path


def card_invitation_email_send(*, invitation_id: int) -> None:
    invitation = CardInvitation.objects.select_related("customer", "space").get(pk=invitation_id)
    if invitation.used_at is not None or invitation.expires_at <= timezone.now():
        return
    customer = invitation.customer
    context = {
        "customer": customer,
        "space": invitation.space,
        "url": card_invitation_url(invitation),
        "expires_at": invitation.expires_at,
    }
    with translation.override(customer.preferred_language):
        subject = render_to_string("cards/emails/invitation_subject.txt", context).strip()
        text = render_to_string("cards/emails/invitation.txt", context)
        html = render_to_string("cards/emails/invitation.html", context)
    message = EmailMultiAlternatives(subject, text, to=[customer.email])
    message.attach_alternative(html, "text/html")
    message.send()


def card_invitation_check(*, public_id, token: str) -> CardInvitation:
    """The invitation a link points to, or a clear reason why the link does not work."""
    invitation = (
        CardInvitation.objects.select_related("customer", "space")
        .filter(public_id=public_id)
        .first()
    )
    if invitation is None or not invitation_token_generator.check_token(invitation, token):
        raise InvitationInvalid()
    if invitation.used_at is not None:
        raise InvitationUsed()
    if invitation.expires_at <= timezone.now():
        raise InvitationExpired()
    return invitation
