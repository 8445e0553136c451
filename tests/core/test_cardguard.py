"""The card-data detector (core.cardguard): the card numbers and IBANs it finds, what it lets
pass."""

import random
import string
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.cardguard import (
    CARD_NUMBER,
    IBAN,
    card_data_kind,
    contains_card_number,
    contains_iban,
    luhn_valid,
    mask_card_data,
)

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


def test_the_iban_check_is_what_tells_an_iban_from_a_card_number():
    # An IBAN whose account number holds a Luhn-valid run is an IBAN (refused as one, and its
    # digits are no card number); with wrong check digits the same text is only digits, and the
    # card number in them is found.
    assert not contains_card_number("DE65 4242 4242 4242 4242 00")
    assert card_data_kind("DE65 4242 4242 4242 4242 00") == IBAN
    assert card_data_kind("DE00 4242 4242 4242 4242 00") == CARD_NUMBER


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
def test_mask_card_data_masks_the_run_in_place(text, masked):
    assert mask_card_data(text) == masked


def test_prefixed_uuids_are_not_card_numbers():
    """Clients build keys such as "order-<uuid>" (Idempotency-Key, references); a load run
    found 4 in 4,000 refused when a dash came before the UUID."""
    rng = random.Random(7)
    keys = [f"load-3f2a91c0-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(20_000)]
    assert [key for key in keys if contains_card_number(key)] == []
    # A real card number next to a UUID is still found.
    assert contains_card_number(f"4242 4242 4242 4242-{uuid.UUID(int=1)}")


# --- IBANs ------------------------------------------------------------------------------------


def _mod97_valid(compact: str) -> bool:
    """ISO 7064 mod 97-10, written here again so the examples below are checked independently
    of the library the detector uses."""
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


# Valid IBANs (the registry's and the banks' published examples) in the way people write them.
IBANS = {
    "DE": "DE89 3704 0044 0532 0130 00",
    "FR": "FR14 2004 1010 0505 0001 3M02 606",
    "GB": "GB29 NWBK 6016 1331 9268 19",
    "NL": "NL91 ABNA 0417 1643 00",
    "AT": "AT61 1904 3002 3457 3201",
    "IT": "IT60 X054 2811 1010 0000 0123 456",
    "BE": "BE68 5390 0754 7034",
    "CH": "CH93 0076 2011 6238 5295 7",
    "ES": "ES91 2100 0418 4502 0005 1332",
    "NO, the shortest": "NO93 8601 1117 947",
}

IBAN_FORMS = {
    "spaced": lambda iban: iban,
    "compact": lambda iban: iban.replace(" ", ""),
    "dashed": lambda iban: iban.replace(" ", "-"),
    "dotted": lambda iban: iban.replace(" ", "."),
    "lowercase": lambda iban: iban.lower(),
    "lowercase, compact": lambda iban: iban.replace(" ", "").lower(),
    "uneven groups": lambda iban: (
        iban[:6] + " " + iban[6:].replace(" ", "")[:7] + " " + iban[6:].replace(" ", "")[7:]
    ),
    "no-break spaces": lambda iban: iban.replace(" ", "\u00a0"),
    "full-width": lambda iban: "".join(
        chr(ord(char) + 0xFEE0) if char != " " else "\u3000" for char in iban
    ),
    "in a sentence": lambda iban: f"Bitte auf {iban} überweisen, danke.",
    "after a label": lambda iban: f"IBAN:{iban.replace(' ', '')}",
    "followed by the BIC": lambda iban: f"{iban} BIC COBADEFFXXX",
    "in JSON": lambda iban: f'{{"reason": "{iban}"}}',
    "in parentheses": lambda iban: f"({iban})",
    "after a dash": lambda iban: f"ref-{iban.replace(' ', '')}",
}


def test_the_iban_examples_are_valid():
    for iban in IBANS.values():
        assert _mod97_valid(iban.replace(" ", "")), iban


@pytest.mark.parametrize("country", IBANS)
@pytest.mark.parametrize("form", IBAN_FORMS)
def test_ibans_are_found_in_every_way_people_write_them(country, form):
    text = IBAN_FORMS[form](IBANS[country])

    assert contains_iban(text), text
    assert card_data_kind(text) == IBAN


@pytest.mark.parametrize("country", IBANS)
def test_a_wrong_check_digit_or_length_is_no_iban(country):
    compact = IBANS[country].replace(" ", "")
    wrong_check = compact[:2] + f"{(int(compact[2:4]) + 1) % 100:02d}" + compact[4:]
    for text in (wrong_check, compact[:-1], compact + "7", compact + "X"):
        assert not contains_iban(text), text


def test_two_ibans_in_one_text_are_both_masked():
    text = "from DE89 3704 0044 0532 0130 00 to NL91 ABNA 0417 1643 00."

    assert mask_card_data(text) == "from DE** **** **** **** **30 00 to NL** **** **** **43 00."


@pytest.mark.parametrize(
    "text, masked",
    [
        ("DE89370400440532013000", "DE****************3000"),
        ("iban de89-3704-0044-0532-0130-00!", "iban de**-****-****-****-**30-00!"),
        ("GB29 NWBK 6016 1331 9268 19 BIC", "GB** **** **** **** **68 19 BIC"),
    ],
)
def test_an_iban_is_masked_in_place_keeping_the_country_and_last_4(text, masked):
    assert mask_card_data(text) == masked


IBAN_PASSES = {
    "an order reference": "INV-2026-000123",
    "a reference with a country prefix": "Order DE-2026-000123-44",
    "a long reference": "ORD20261122000123456789",
    "a reference with a country and digits": "AT2026-11-22-0001",
    "a payment method id": "pm_1OabCDeFGhIJklMN23opQRst",
    "a customer id": "cus_NffrFeUfNV2Hib",
    "a payment intent id": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
    "a setup intent id": "seti_1Mm8s8LkdIwHu7ixLAnmzVoX",
    "a setup intent's client secret": "seti_1Mm8s8LkdIwHu7ixLAnmzVoX_secret_NXDa2Gw7YqHmVxL",
    "a provider id ending in an IBAN's characters": "pm_DE89370400440532013000",
    "an IBAN glued to a word": "DE89370400440532013000EUR",
    "a UUID": "de12a456-4267-4661-8174-1234567890ab",
    "an ISO date and time": "2026-11-22T10:00:00+01:00",
    "an amount": "EUR 1.234.567,89",
    "long words without digits": "Donaudampfschifffahrtsgesellschaftskapitänswitwe",
    "a German VAT id": "DE123456789",
    "a Dutch VAT id": "NL123456789B01",
    "a BIC": "COBADEFFXXX",
    "a sentence with country words": "de 2026 à 2027, at 12 15 Uhr in 10115 Berlin",
    "a phone number": "+49 30 1234 5678",
    "a postcode and street": "AT 1010 Wien, Stephansplatz 1",
    "a SHA-256": "1a275224991739735d03bcebadc54126bdaeaf192a258b3f2c84cdec0ddec8f5",
    "a last 4 as we keep it": "DE ending in 3000 (bank 37040044)",
    "a masked IBAN": "DE** **** **** **** **30 00",
}


@pytest.mark.parametrize("text", IBAN_PASSES.values(), ids=IBAN_PASSES.keys())
def test_ordinary_text_is_no_iban(text):
    assert card_data_kind(text) is None


def test_ids_tokens_and_uuids_are_never_ibans():
    """What every request carries by the thousand: UUIDs (also prefixed, as Idempotency-Keys),
    our provider's ids and client secrets, session keys, CSRF tokens."""
    rng = random.Random(17)
    alnum = string.ascii_letters + string.digits
    lower = string.ascii_lowercase + string.digits

    def word(alphabet, length):
        return "".join(rng.choice(alphabet) for _ in range(length))

    texts = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5_000)]
    texts += [f"order-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(5_000)]
    for prefix in ("pm_", "cus_", "pi_", "seti_", "ch_", "re_", "evt_"):
        texts += [prefix + word(alnum, 24) for _ in range(1_000)]
    texts += [f"seti_{word(alnum, 24)}_secret_{word(alnum, 24)}" for _ in range(1_000)]
    texts += [word(lower, 32) for _ in range(5_000)]  # session keys
    texts += [word(alnum, 32) for _ in range(5_000)]  # CSRF tokens

    assert [text for text in texts if contains_iban(text)] == []


def test_the_benchmark_still_runs():
    """bench/cardguard.py measures what the guard costs per request; its smoke mode times each
    measurement once, so a change that breaks the script is seen here. No timing is judged."""
    root = Path(__file__).resolve().parents[2]

    done = subprocess.run(
        [sys.executable, "bench/cardguard.py", "--smoke"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "admin form post" in done.stdout and "an IBAN, grouped" in done.stdout
