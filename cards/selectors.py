import calendar
from datetime import date, timedelta

from django.conf import settings
from django.core.cache import caches
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from core.search import all_terms, is_last4
from spaces.models import Space

from .models import CardRegistration, Customer, PaymentCard


def card_registration_get(*, public_id) -> CardRegistration | None:
    return (
        CardRegistration.objects.select_related("card", "customer", "space")
        .filter(public_id=public_id, card__isnull=False)
        .first()
    )


PUBLIC_SPACE_TTL = 30  # seconds a closed or renamed space may still show its page


def public_space_get(*, slug: str) -> Space | None:
    """The space whose public registration page is `slug`, if open.

    Kept briefly in the per-process cache: the page is public and hot, spaces rarely change.
    """
    cache = caches["fragments"]
    key = f"public-space:{slug}"
    space = cache.get(key)
    if space is None:
        space = Space.objects.filter(slug=slug, public_card_registration=True).first() or False
        cache.set(key, space, PUBLIC_SPACE_TTL)
    return space or None


# --- Cards about to expire --------------------------------------------------------------------


def card_expiry_end(card: PaymentCard) -> date:
    """The last day a card can be charged: the end of its expiry month."""
    return date(
        card.exp_year, card.exp_month, calendar.monthrange(card.exp_year, card.exp_month)[1]
    )


def card_expiry_warning_days(space: Space) -> int:
    if space.card_expiry_warning_days is not None:
        return space.card_expiry_warning_days
    return settings.CARD_EXPIRY_WARNING_DAYS


def payment_cards_expiring(*, today: date | None = None, days: int | None = None):
    """Active cards whose expiry month ends within the warning window (the space's days, or
    `days` for all), not yet expired and not replaced: the customer has no other active card
    that expires later. Returns the cards, soonest first."""
    today = today or timezone.localdate()
    month_index = F("exp_year") * 12 + F("exp_month")
    later_card = PaymentCard.objects.filter(
        customer_id=OuterRef("customer_id"), status=PaymentCard.Status.ACTIVE
    ).filter(
        Q(exp_year__gt=OuterRef("exp_year"))
        | Q(exp_year=OuterRef("exp_year"), exp_month__gt=OuterRef("exp_month"))
    )
    longest = (
        days
        if days is not None
        else max(
            [settings.CARD_EXPIRY_WARNING_DAYS]
            + list(
                Space.objects.exclude(card_expiry_warning_days=None).values_list(
                    "card_expiry_warning_days", flat=True
                )
            )
        )
    )
    horizon = today + timedelta(days=longest)
    candidates = (
        PaymentCard.objects.filter(status=PaymentCard.Status.ACTIVE)
        .alias(month_index=month_index, replaced=Exists(later_card))
        .filter(
            month_index__gte=today.year * 12 + today.month,
            month_index__lte=horizon.year * 12 + horizon.month,
            replaced=False,
        )
        .select_related("customer", "space")
        .order_by("exp_year", "exp_month", "pk")
    )
    cards = []
    for card in candidates:
        window = days if days is not None else card_expiry_warning_days(card.space)
        if today <= card_expiry_end(card) <= today + timedelta(days=window):
            cards.append(card)
    return cards


def customer_search(*, queryset: QuerySet[Customer], text: str) -> QuerySet[Customer]:
    """Customers matching every word of `text`, each word by any of: their email (any case),
    number or provider id, the last 4 of one of their cards, or a part of their name. Indexed
    lookups on the customer's own columns (core.search)."""
    condition = all_terms(text, customer_term)
    return queryset if condition is None else queryset.filter(condition)


def customer_term(term: str) -> Q:
    """One word of a customer search (also used by the lists of rows that name a customer)."""
    match = (
        Q(name__icontains=term)
        | Q(email__iexact=term)
        | Q(external_number=term)
        | Q(provider_customer_id=term)
    )
    if is_last4(term):
        # One card in 10,000 has these last 4: looked up first, so the OR stays indexed.
        holders = list(PaymentCard.objects.filter(last4=term).values_list("customer_id", flat=True))
        if holders:
            match |= Q(pk__in=holders)
    return match


def payment_card_search(*, queryset: QuerySet[PaymentCard], text: str) -> QuerySet[PaymentCard]:
    """Cards matching every word of `text`: their last 4, or their customer found as in
    customer_search."""

    def card_term(term: str) -> Q:
        match = Q(customer__in=Customer.objects.filter(customer_term(term)).values("pk"))
        return match | Q(last4=term) if is_last4(term) else match

    condition = all_terms(text, card_term)
    return queryset if condition is None else queryset.filter(condition)
