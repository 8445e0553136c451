from django.core.cache import caches

from spaces.models import Space

from .models import CardRegistration


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
