"""Payment links: signed tokens that hash the state which must invalidate them.

The token carries the link's id and a hash of (expiry, used, retired, level state); once the
link is paid, retired by a newer level, or its level has ended, the hash no longer matches and
the old URL is refused even though its signature is genuine. Expiry is read from the row, so a
link expires exactly with its level."""

from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

SALT = "chargeflows.payment-link"


def _state_hash(link) -> str:
    value = "|".join(
        str(part)
        for part in (
            link.pk,
            link.expires_at.isoformat(),
            link.used_at.isoformat() if link.used_at else "",
            link.retired_at.isoformat() if link.retired_at else "",
        )
    )
    return salted_hmac(SALT, value, algorithm="sha256").hexdigest()[:32]


def link_token_make(link) -> str:
    return signing.dumps({"l": link.pk, "h": _state_hash(link)}, salt=SALT, compress=False)


def link_token_read(token: str) -> tuple[int, str] | None:
    """(link id, state hash) from a genuine token, else None."""
    try:
        data = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("l"), int):
        return None
    return data["l"], str(data.get("h", ""))


def link_token_matches(link, state_hash: str) -> bool:
    return constant_time_compare(_state_hash(link), state_hash)
