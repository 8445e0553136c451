import pytest

from billing import money


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.34", "EUR", 1234),
        ("12.3", "EUR", 1230),
        ("12", "EUR", 1200),
        ("500", "JPY", 500),
        ("1.234", "BHD", 1234),
        (" 7.50 ", "usd", 750),
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
