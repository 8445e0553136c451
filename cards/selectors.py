from django.core.cache import caches
from django.db.models import Q, QuerySet

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
