import pytest

from cards.luhn import contains_card_number, luhn_valid


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424242",
        "card: 4242 4242 4242 4242 thanks",
        "4242-4242-4242-4242",
        "378282246310005",  # American Express, 15 digits
        "6011111111111117",
        "4000056655665556",
        '{"pan":"5555555555554444"}',
        "4222222222222",  # 13 digits
    ],
)
def test_card_numbers_are_found(text):
    assert contains_card_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "4242424242424241",  # fails Luhn
        "123456789012",  # 12 digits
        "42424242424242424242",  # 20 digits: not a card number run
        "4242  4242  4242  4242",  # double separators are not one number
        "seti_1234abcd",
        "2026-11-22 10:00:00",
        "00000000-0000-0000-0000-000000000000",  # all zeros pass Luhn; no card starts with 0
    ],
)
def test_other_text_is_not_flagged(text):
    assert not contains_card_number(text)


def test_luhn():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
