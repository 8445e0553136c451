import pytest

from core import money


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.34", "EUR", 1234),
        ("12.3", "EUR", 1230),
        ("12", "EUR", 1200),
        ("500", "JPY", 500),
        ("1.234", "BHD", 1234),
        ("7.50", "usd", 750),
    ],
)
def test_amounts_convert_to_minor_units(amount, currency, minor):
    assert money.to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("12.345", "EUR", "at most 2 decimal places"),
        ("12.5", "JPY", "no decimal places"),
        ("abc", "EUR", "as a number"),
        ("NaN", "EUR", "as a number"),
        ("Infinity", "EUR", "as a number"),
        ("1e999999999", "EUR", "as a number"),
        ("1e2", "EUR", "as a number"),
        ("١٢", "EUR", "as a number"),  # Arabic-Indic digits
        ("", "EUR", "as a number"),
        ("12", "XXX", "not a currency we charge in"),
    ],
)
def test_bad_amounts_are_refused_with_a_message(amount, currency, message):
    with pytest.raises(money.MoneyError, match=message):
        money.to_minor(amount, currency)


@pytest.mark.parametrize(("minor", "message"), [(0, "more than zero"), (-5, "more than zero")])
def test_amounts_must_be_positive(minor, message):
    with pytest.raises(money.MoneyError, match=message):
        money.check_amount(minor, "EUR", maximum=1000)


def test_amounts_above_the_maximum_are_refused():
    money.check_amount(1000, "EUR", maximum=1000)
    with pytest.raises(money.MoneyError, match="maximum of 10.00 EUR"):
        money.check_amount(1001, "EUR", maximum=1000)


def test_format_money_uses_the_currency_decimals():
    assert money.format_money(123456, "EUR") == "1,234.56 EUR"
    assert money.format_money(123456, "JPY") == "123,456 JPY"
    assert money.format_money(None, "EUR") == "—"


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (" 7.50", "without spaces around it"),
        ("7.50 ", "without spaces around it"),
        ("7.50\n", "without spaces around it"),
        ("\u00a07.50", "without spaces around it"),  # a no-break space
        ("１２.５０", "as a number"),  # full-width digits, which Decimal() reads as 12.50
        ("١٢.٥٠", "as a number"),  # Arabic-Indic digits
        ("१२", "as a number"),  # Devanagari digits
        ("12.50\x00", "as a number"),
    ],
)
def test_spaces_and_other_scripts_digits_are_refused(amount, message):
    with pytest.raises(money.MoneyError, match=message):
        money.to_minor(amount, "EUR")


@pytest.mark.parametrize(
    ("currency", "smallest", "message"),
    [
        ("EUR", 50, "in EUR: 0.50 EUR"),
        ("USD", 50, "in USD: 0.50 USD"),
        ("CHF", 50, "in CHF: 0.50 CHF"),
        ("GBP", 30, "in GBP: 0.30 GBP"),
        ("JPY", 50, "in JPY: 50 JPY"),
        ("SEK", 300, "in SEK: 3.00 SEK"),
        ("NOK", 300, "in NOK: 3.00 NOK"),
        ("DKK", 250, "in DKK: 2.50 DKK"),
        ("PLN", 200, "in PLN: 2.00 PLN"),
        ("CZK", 1500, "in CZK: 15.00 CZK"),
        ("HKD", 400, "in HKD: 4.00 HKD"),
    ],
)
def test_amounts_below_the_providers_minimum_charge_are_refused(currency, smallest, message):
    money.check_amount(smallest, currency, maximum=10**9)
    with pytest.raises(money.MoneyError, match=f"smallest charge .* accepts {message}"):
        money.check_amount(smallest - 1, currency, maximum=10**9)


def test_every_currency_we_charge_in_has_a_minimum():
    assert set(money.CURRENCIES) <= set(money.MINIMUM_CHARGE)
    assert all(minimum > 0 for minimum in money.MINIMUM_CHARGE.values())
