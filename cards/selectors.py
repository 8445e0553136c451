from django.core.cache import caches
from django.db.models import Count, QuerySet

from spaces.models import Space

from .models import CardRegistration, Customer, PaymentCard


def customer_list(*, spaces) -> QuerySet[Customer]:
    return (
        Customer.objects.filter(space__in=spaces)
        .select_related("space")
        .annotate(card_count=Count("cards"))
    )


def payment_card_list(*, customer: Customer) -> QuerySet[PaymentCard]:
    return PaymentCard.objects.filter(customer=customer)


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
