"""Spotting card numbers (PANs) in text, and masking them for logs.

What counts as a card number: a Luhn-valid run of 13 to 19 digits that does not start with 0,
written as whole digit groups inside a longer run of digits joined by single separators (a
space, a dash or a dot; any Unicode space or dash counts). Every window of whole groups is
checked, not one greedy match, so a number followed by its expiry or CVC
("4242 4242 4242 4242 12/34", "4242424242424242 123") or preceded by other digits is found.

The text is first normalised character by character with NFKC, and every Unicode decimal digit
is read as its ASCII digit: full-width ("４２４２"), Arabic-Indic or Devanagari digits are digits.
Normalising one character at a time keeps positions, so `mask_card_numbers` can mask the
original text in place.

Choices, and why:
- Windows start and end at group boundaries (a separator, or the run's ends), not at every
  digit. Seven window lengths at every offset of a long bare digit string would make most of
  them "card numbers" by chance (one window in ten passes Luhn): a 27-digit multipart boundary
  that Firefox sends in Content-Type, an analytics cookie ("GS1.1.1700000000.1.1...") or a
  20-digit ERP reference would be refused 60-99% of the time. A PAN glued to other digits with
  no separator at all ("4242424242424242123") is therefore not found; people (and the forms we
  were shown) separate a CVC or an expiry from the number.
- No window starts with 0: ISO/IEC 7812 gives no payment card a 0 as its first (industry)
  digit, while zero-filled references are common (an all-zero UUID is "Luhn-valid").
- A window may hold groups of one or two digits only when all its groups have the same
  length ("4 2 4 2 ...", "42 42 ..."). Version numbers, addresses and cookies such as Google
  Analytics' "GS1.1.1700000000.1.1.1700000100.0.0.0" mix short and long groups; card numbers are
  written in groups of 4 (4-6-5 or 4-6-4 for American Express and Diners).
- Exactly one separator between groups: "4242  4242" (two spaces) or a line break ends a run.
  Lists of amounts or dates set in columns would otherwise join into long runs.
- Some shapes are recognised and never read as a card number: an IBAN with a valid ISO 7064
  check (its 18-30 digits in groups of four are Luhn-valid somewhere 1 time in 3), a UUID in
  its 8-4-4-4-12 form, a hexadecimal hash or token of 32 characters or more (1 SHA-256 in 250
  holds a Luhn-valid run of digits between its letters; a UUID's 32 hex digits 1 in 500), a
  calendar date (2026-11-22, 22.11.2026, 22/11/2026) and a phone number
  written with "+" and at most 15 digits (E.164's maximum).

Cost: text with fewer than 13 digits (almost every header, query and form field) is answered
after one pass of str.count per digit, text without a run of 13 after one regular expression;
ASCII text skips normalisation. `bench/cardguard.py`
prints figures.
"""

import re
import unicodedata
from functools import lru_cache

MIN_DIGITS = 13
MAX_DIGITS = 19
_DIGITS = "0123456789"

# After normalisation every separator is one of these three characters.
_RUN = re.compile(r"[0-9](?:[ .\-]?[0-9])*")
_LONG_RUN = re.compile(r"[0-9](?:[ .\-]?[0-9]){12,}")
_GROUP_SPLIT = re.compile(r"[ .\-]")

# Shapes that carry long digit runs and are not card numbers (see the module docstring). Each
# found span is blanked before runs are read; the IBAN also needs its check digits to be right.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
# A dash may come before a UUID: clients send keys such as "order-<uuid>" (an Idempotency-Key),
# and the UUID's own digits could otherwise join a Luhn-valid run about once in a thousand.
_UUID = re.compile(
    r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
    r"[0-9A-Fa-f]{12}(?![0-9A-Fa-f-])"
)
_DATE = re.compile(
    r"(?<![0-9.\-/])(?:"
    r"(?P<y1>(?:19|20)[0-9]{2})[-./](?P<m1>[0-9]{1,2})[-./](?P<d1>[0-9]{1,2})"
    r"|(?P<d2>[0-9]{1,2})[-./](?P<m2>[0-9]{1,2})[-./](?P<y2>(?:19|20)[0-9]{2})"
    r")(?![0-9])"
)
# Hashes and tokens: 32 or more hexadecimal characters, at least one of them a letter.
_HEX = re.compile(r"(?<![0-9A-Za-z])(?=[0-9]*[A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Za-z])")
_PHONE = re.compile(r"\+[0-9](?:[ .\-]?[0-9])*")
_PHONE_MAX_DIGITS = 15
# Groups shorter than this join a window only when all its groups are that long (see above).
_SHORT_GROUP = 3


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of an ASCII digit string."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


@lru_cache(maxsize=4096)
def _normalised_char(char: str) -> str:
    """One character as the detector reads it: an ASCII digit, " " for any Unicode space, "-"
    for any dash, "." for a full stop, else the character itself (never a digit)."""
    if char.isdecimal():
        return _DIGITS[unicodedata.decimal(char)]
    folded = unicodedata.normalize("NFKC", char)
    if len(folded) == 1:
        if folded.isdecimal():
            return _DIGITS[unicodedata.decimal(folded)]
        if folded in " .-":
            return folded
        char = folded
    category = unicodedata.category(char)
    if category == "Zs" or char == "\t":
        return " "
    if category == "Pd" or char == "\u2212":  # dashes, and the minus sign
        return "-"
    # Anything else only needs to not be read as a digit or a separator; kept as it is, so the
    # shapes above (IBAN letters, UUID hex) stay recognisable.
    return char


def _normalise(text: str) -> str:
    """`text` with digits and separators in ASCII, one character for one character."""
    if text.isascii():
        return text.replace("\t", " ")
    return "".join(map(_normalised_char, text))


def _digit_count(text: str) -> int:
    return sum(map(text.count, _DIGITS))


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + "_" * (end - start) + text[end:]


def _iban_end(candidate: str) -> int:
    """Length of the longest prefix of `candidate` that is an IBAN with a valid check, or 0.
    (The pattern may have run on into the next word: "DE89 3704 0044 0532 0130 00 BIC".)"""
    for end in range(len(candidate), 14, -1):
        compact = candidate[:end].replace(" ", "")
        if candidate[end - 1] == " " or not 15 <= len(compact) <= 34:
            continue
        rearranged = compact[4:] + compact[:4]
        if int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1:
            return end
    return 0


def _date_valid(match: re.Match) -> bool:
    month = int(match["m1"] or match["m2"])
    day = int(match["d1"] or match["d2"])
    return 1 <= month <= 12 and 1 <= day <= 31


def _without_known_shapes(text: str) -> str:
    for match in _IBAN.finditer(text):
        if end := _iban_end(match.group()):
            text = _blank(text, match.start(), match.start() + end)
    for pattern in (_UUID, _HEX):
        for match in pattern.finditer(text):
            text = _blank(text, *match.span())
    for match in _DATE.finditer(text):
        if _date_valid(match):
            text = _blank(text, *match.span())
    for match in _PHONE.finditer(text):
        if _digit_count(match.group()) <= _PHONE_MAX_DIGITS:
            text = _blank(text, *match.span())
    return text


def _run_has_card_number(run: str) -> bool:
    """Whether some window of whole groups of this run is a card number."""
    groups = _GROUP_SPLIT.split(run)
    for first, group in enumerate(groups):
        if group[0] == "0":
            continue
        digits, lengths = "", set()
        for following in groups[first:]:
            digits += following
            lengths.add(len(following))
            if len(digits) > MAX_DIGITS:
                break
            if (
                len(digits) >= MIN_DIGITS
                and (min(lengths) >= _SHORT_GROUP or len(lengths) == 1)
                and luhn_valid(digits)
            ):
                return True
    return False


def _card_number_runs(text: str):
    """(start, end) of each run in `text` holding a card number; `text` must be normalised."""
    if _digit_count(text) < MIN_DIGITS or not _LONG_RUN.search(text):
        return
    scanned = _without_known_shapes(text)
    for match in _RUN.finditer(scanned):
        run = match.group()
        if len(run) >= MIN_DIGITS and _digit_count(run) >= MIN_DIGITS:
            if _run_has_card_number(run):
                yield match.span()


def contains_card_number(text: str) -> bool:
    """Whether `text` holds a card number, in any of the forms the module docstring lists."""
    if not text or len(text) < MIN_DIGITS:
        return False
    return next(_card_number_runs(_normalise(text)), None) is not None


def mask_card_numbers(text: str) -> str:
    """`text` with every digit of each run holding a card number replaced by "*" (the run's
    other digits too: a CVC or expiry written next to the number goes with it)."""
    if not text or len(text) < MIN_DIGITS:
        return text
    normalised = _normalise(text)
    spans = list(_card_number_runs(normalised))
    if not spans:
        return text
    chars = list(text)
    for start, end in spans:
        for index in range(start, end):
            if normalised[index].isdigit():
                chars[index] = "*"
    return "".join(chars)
