"""The card-number detector (core.cardguard): what it finds, what it lets pass."""

import pytest

from core.cardguard import contains_card_number, luhn_valid, mask_card_numbers

FOUND = {
    "plain": "4242424242424242",
    "in a sentence": "card: 4242 4242 4242 4242 thanks",
    "dashes": "4242-4242-4242-4242",
    "dots": "4242.4242.4242.4242",
    "American Express, 15 digits, 4-6-5": "3782 822463 10005",
    "Discover": "6011111111111117",
    "in JSON": '{"pan":"5555555555554444"}',
    "13 digits": "4222222222222",
    "19 digits": "4242424242424242428",
    # The reported misses: a greedy match took the expiry or CVC along and failed Luhn.
    "followed by an expiry": "4242 4242 4242 4242 12/34",
    "followed by a CVC": "4242424242424242 123",
    "expiry and CVC in words": "Name 4242 4242 4242 4242 exp 12/34 CVC 123",
    "preceded by other digits": "1 4242 4242 4242 4242",
    "after a zero": "0 4242424242424242",
    "followed by a date": "4242 4242 4242 4242 2026-11-22",
    "no-break spaces": "4242\u00a04242\u00a04242\u00a04242",
    "narrow no-break spaces": "4242\u202f4242\u202f4242\u202f4242",
    "ideographic spaces": "4242\u30004242\u30004242\u30004242",
    "thin spaces": "4242\u20094242\u20094242\u20094242",
    "en dashes": "4242\u20134242\u20134242\u20134242",
    "full-width digits": "４２４２４２４２４２４２４２４２",
    "full-width with spaces": "４２４２　４２４２　４２４２　４２４２",
    "Arabic-Indic digits": "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",
    "Devanagari digits": "४२४२४२४२४२४२४२४२",
    "mixed scripts": "42４２٤٢४२4242424242",
    "single-digit groups": "4 2 4 2 4 2 4 2 4 2 4 2 4 2 4 2",
    "two-digit groups": "42 42 42 42 42 42 42 42",
    "glued to letters": "x4242424242424242y",
    "a plus sign and 16 digits": "+4242 4242 4242 4242",
}

PASSES = {
    "empty": "",
    "fails Luhn": "4242424242424241",
    "12 digits": "123456789012",
    "a 10-digit order number": "Order 1234567890",
    "order numbers side by side": "Orders 1234567890 1234567891",
    "double spaces end a run": "4242  4242  4242  4242",
    "a provider id": "seti_1234abcd",
    "a timestamp": "2026-11-22 10:00:00",
    "a date range": "01.11.2026-30.11.2026",
    "a date range with spaces": "22.11.2026 - 30.11.2026",
    "a US date": "11/22/2026",
    "an amount": "EUR 1,234,567.89",
    "a European amount": "1.234.567,89 €",
    "an amount in minor units": "4990",
    "an IBAN": "DE89 3704 0044 0532 0130 00",
    "an IBAN, compact": "DE89370400440532013000",
    "an IBAN followed by a BIC": "DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX",
    "a British IBAN": "GB29 NWBK 6016 1331 9268 19",
    "a French IBAN": "FR76 3000 6000 0112 3456 7890 189",
    "a German mobile number": "+49 151 23456789",
    "a phone number in groups": "+49 30 1234 5678 90",
    "a US phone number": "+1 (415) 555-2671",
    "a national phone number": "030 1234 5678",
    "a UUID": "123e4567-e89b-12d3-a456-426614174000",
    "a UUID of digits": "12345678-1234-1234-1234-123456789012",
    "the all-zero UUID": "00000000-0000-0000-0000-000000000000",
    "zero-filled": "0000000000000000",
    # Its digits "275224991739735" pass Luhn: 1 SHA-256 in 250 holds such a run.
    "a SHA-256": "1a275224991739735d03bcebadc54126bdaeaf192a258b3f2c84cdec0ddec8f5",
    "a 20-digit reference": "42424242424242424242",
    "Firefox's multipart boundary": (
        "multipart/form-data; boundary=---------------------------974767299852498929531610575"
    ),
    "analytics cookies": (
        "_ga=GA1.1.1234567890.1700000000; _ga_X=GS1.1.1700000000.1.1.1700000100.0.0.0"
    ),
    "a user agent": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.6099.109 Safari/537.36"
    ),
    "IP addresses": "203.0.113.195 198.51.100.17",
}


@pytest.mark.parametrize("text", FOUND.values(), ids=FOUND.keys())
def test_card_numbers_are_found(text):
    assert contains_card_number(text)


@pytest.mark.parametrize("text", PASSES.values(), ids=PASSES.keys())
def test_other_numbers_pass(text):
    assert not contains_card_number(text)


def test_the_iban_check_is_what_lets_an_iban_pass():
    # An IBAN whose account number holds a Luhn-valid run passes; with wrong check digits the
    # same text is only digits, and the card number in them is found.
    assert not contains_card_number("DE65 4242 4242 4242 4242 00")
    assert contains_card_number("DE00 4242 4242 4242 4242 00")


def test_luhn():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


@pytest.mark.parametrize(
    "text, masked",
    [
        ("card 4242 4242 4242 4242 12/34 thanks", "card **** **** **** **** **/34 thanks"),
        ("4242424242424242 123", "**************** ***"),
        ("full-width ４２４２４２４２４２４２４２４２!", "full-width ****************!"),
        (
            "no\u00a0break 4242\u00a04242\u00a04242\u00a04242",
            "no\u00a0break ****\u00a0****\u00a0****\u00a0****",
        ),
        ("order 1234567890 of 49.90 EUR", "order 1234567890 of 49.90 EUR"),
    ],
)
def test_mask_card_numbers_masks_the_run_in_place(text, masked):
    assert mask_card_numbers(text) == masked


def test_prefixed_uuids_are_not_card_numbers():
    """Clients build keys such as "order-<uuid>" (Idempotency-Key, references); a load run
    found 4 in 4,000 refused when a dash came before the UUID."""
    import random
    import uuid

    rng = random.Random(7)
    keys = [f"load-3f2a91c0-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(20_000)]
    assert [key for key in keys if contains_card_number(key)] == []
    # A real card number next to a UUID is still found.
    assert contains_card_number(f"4242 4242 4242 4242-{uuid.UUID(int=1)}")
