"""Money is integer minor units plus an ISO 4217 currency."""

import re
from decimal import Decimal, InvalidOperation

# Plain decimal notation in ASCII digits: no exponents, no other scripts' digits.
_AMOUNT = re.compile(r"-?\d{1,15}(?:\.\d{1,15})?", re.ASCII)

# ISO 4217 minor units that differ from 2 (currencies not listed have 2).
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

# Currencies we accept; a code outside this list is refused with a message.
CURRENCIES = sorted(
    {"EUR", "USD", "GBP", "CHF", "JPY", "SEK", "NOK", "DKK", "PLN", "CZK", "CAD", "AUD",
     "NZD", "SGD", "HKD", "KRW", "BHD", "KWD", "JOD", "OMR"}
)  # fmt: skip


class MoneyError(ValueError):
    """A user-safe reason why an amount is not acceptable."""


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount, currency: str) -> int:
    """'12.34' EUR -> 1234; '500' JPY -> 500. Refuses more decimals than the currency has."""
    currency = currency.upper()
    if currency not in CURRENCIES:
        raise MoneyError(f"{currency or 'That'} is not a currency we charge in.")
    text = str(amount).strip()
    if not _AMOUNT.fullmatch(text):
        raise MoneyError("Enter the amount as a number, e.g. 12.50.")
    try:
        value = Decimal(text)
    except InvalidOperation:  # unreachable after the pattern, kept as a guard
        raise MoneyError("Enter the amount as a number, e.g. 12.50.") from None
    places = exponent(currency)
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        if places == 0:
            raise MoneyError(f"{currency} has no decimal places: enter a whole amount.")
        raise MoneyError(f"{currency} amounts have at most {places} decimal places.")
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def format_money(minor: int | None, currency: str) -> str:
    if minor is None:
        return "—"
    places = exponent(currency)
    return f"{from_minor(minor, currency):,.{places}f} {currency.upper()}"


def check_amount(minor: int, currency: str, *, maximum: int) -> None:
    if minor <= 0:
        raise MoneyError("The amount must be more than zero.")
    if minor > maximum:
        raise MoneyError(
            f"The amount is above this space's maximum of {format_money(maximum, currency)}."
        )
