"""Money is integer minor units plus an ISO 4217 currency: the currencies we charge in, their
exponents, the one parser of typed amounts (admin and API), formatting and the provider's
minimum charges. Domain-free, so every room (spaces' default currency, billing's amounts,
payments' admin) refers to the same list and rules."""

import re
from decimal import Decimal, InvalidOperation

from babel.core import UnknownLocaleError
from babel.numbers import format_currency
from django.utils import translation

from .errors import DomainError

# Plain decimal notation in ASCII digits: no exponents, no other scripts' digits.
_AMOUNT = re.compile(r"-?\d{1,15}(?:\.\d{1,15})?", re.ASCII)

# ISO 4217 minor units that differ from 2 (currencies not listed have 2).
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

# The ISO 4217 currencies we charge in; a code outside this list is refused with a message.
CURRENCIES = sorted(
    {"EUR", "USD", "GBP", "CHF", "JPY", "SEK", "NOK", "DKK", "PLN", "CZK", "CAD", "AUD",
     "NZD", "SGD", "HKD", "KRW", "BHD", "KWD", "JOD", "OMR"}
)  # fmt: skip

CURRENCY_CHOICES = [(code, code) for code in CURRENCIES]

# The smallest charge the provider accepts, in minor units (Stripe, "Minimum and maximum charge
# amounts"). Below it the provider refuses the charge only after approval, at charge time.
MINIMUM_CHARGE = {
    "EUR": 50, "USD": 50, "CHF": 50, "CAD": 50, "AUD": 50, "NZD": 50, "SGD": 50,
    "GBP": 30, "JPY": 50, "SEK": 300, "NOK": 300, "DKK": 250, "PLN": 200, "CZK": 1500,
    "HKD": 400,
    # Not in Stripe's table: it requires the equivalent of 0.50 USD at the day's rate, so
    # these are set well above that to stay valid when rates move.
    "KRW": 1000, "BHD": 250, "KWD": 200, "JOD": 500, "OMR": 250,
}  # fmt: skip


class MoneyError(DomainError, ValueError):
    """A user-safe reason why an amount is not acceptable (still a ValueError, as before)."""

    code = "invalid_amount"
    field = "amount"


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount, currency: str) -> int:
    """'12.34' EUR -> 1234; '500' JPY -> 500. The one parser of typed amounts (admin and API).

    Refuses more decimals than the currency has, and anything but plain ASCII decimal text:
    surrounding spaces, exponents, other scripts' digits (Python's Decimal would read "１２"),
    so what one entry point refuses no other accepts."""
    currency = currency.upper()
    if currency not in CURRENCIES:
        raise MoneyError(f"{currency or 'That'} is not a currency we charge in.")
    text = str(amount)
    if text != text.strip():
        raise MoneyError("Enter the amount without spaces around it, e.g. 12.50.")
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
    """Staff's neutral form, the same in every language: "1,234.50 EUR"."""
    if minor is None:
        return "—"
    places = exponent(currency)
    return f"{from_minor(minor, currency):,.{places}f} {currency.upper()}"


def format_money_local(minor: int | None, currency: str, language: str | None = None) -> str:
    """What a customer reads, in their locale's form (CLDR data through Babel): "€1,234.50"
    in English, "1.234,50 €" in German, "￥1,235" in Japanese (JPY has no minor unit). The
    language is the active one unless named: pages and emails run under the customer's."""
    if minor is None:
        return "—"
    locale = (language or translation.get_language() or "en").replace("-", "_")
    amount = from_minor(minor, currency)
    # No rounding ever: where CLDR's digits differ from ISO 4217's (IQD), every digit shows.
    options = {"decimal_quantization": False}
    try:
        return format_currency(amount, currency.upper(), locale=locale, **options)
    except (UnknownLocaleError, ValueError):
        return format_currency(amount, currency.upper(), locale="en", **options)


def minimum_charge(currency: str) -> int:
    """The provider's smallest charge in `currency`, in minor units."""
    currency = currency.upper()
    return MINIMUM_CHARGE.get(currency, 50 * 10 ** max(exponent(currency) - 2, 0))


def check_amount(minor: int, currency: str, *, maximum: int) -> None:
    """An amount may be charged: above zero, at least the provider's minimum for the currency,
    at most the space's maximum."""
    if minor <= 0:
        raise MoneyError("The amount must be more than zero.")
    minimum = minimum_charge(currency)
    if minor < minimum:
        raise MoneyError(
            f"The amount is below the smallest charge our payment provider accepts in "
            f"{currency.upper()}: {format_money(minimum, currency)}."
        )
    if minor > maximum:
        raise MoneyError(
            f"The amount is above this space's maximum of {format_money(maximum, currency)}."
        )
