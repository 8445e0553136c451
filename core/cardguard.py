"""Spotting card data in text: card numbers (PANs) and IBANs; masking them for logs.

Neither may reach our servers, logs or database (DESIGN.md, invariant 1): only the provider sees
them. core.middleware refuses a request that carries either, core.logging masks them.

What counts as a card number: a Luhn-valid run of 13 to 19 digits that does not start with 0,
written as whole digit groups inside a longer run of digits joined by single separators (a
space, a dash or a dot; any Unicode space or dash counts). Every window of whole groups is
checked, not one greedy match, so a number followed by its expiry or CVC
("4242 4242 4242 4242 12/34", "4242424242424242 123") or preceded by other digits is found.

What counts as an IBAN: two letters naming a country of the IBAN registry, two check digits,
then exactly that country's number of letters and digits in its registry format (python-stdnum's
copy of SWIFT's registry: Germany 18 digits, Britain 4 letters and 14 digits...), with a valid
ISO 7064 mod-97 check; upper or lower case; a single separator (space, dash, dot) anywhere after
the check digits is ignored ("de89-3704-0044-0532-0130-00", "DE89 370400440532013000"). It starts
after a character that is not a letter, digit or "_" and ends where no letter, digit or "_"
follows, so the tail of a provider id ("pm_...", "cus_...", "seti_..._secret_...") or of a
longer reference is never read as one.

The text is first normalised character by character with NFKC, and every Unicode decimal digit
is read as its ASCII digit: full-width ("４２４２", "ＤＥ８９"), Arabic-Indic or Devanagari
digits are digits. Normalising one character at a time keeps positions, so `mask_card_data`
can mask the original text in place (and core.logging can map positions back to raw text).

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
- An IBAN is checked against its country's registry entry, not by mod-97 alone: one string in
  97 passes mod-97 by chance, while a reference that also has a registry country, that
  country's exact length and its letters and digits in the right places is not one we have
  seen. The length also fixes where the IBAN ends, so one check per candidate suffices.
  Country code and check digits must be written together ("DE89"), as every IBAN is printed;
  "de 2026" in a sentence is no candidate.
- Some shapes are recognised and never read as a card number: an IBAN (found, and refused, as
  what it is; its 18-30 digits in groups of four are Luhn-valid somewhere 1 time in 3), a UUID
  in its 8-4-4-4-12 form (never read as an IBAN either), a hexadecimal hash or token of 32
  characters or more (1 SHA-256 in 250 holds a Luhn-valid run of digits between its letters; a
  UUID's 32 hex digits 1 in 500), a calendar date (2026-11-22, 22.11.2026, 22/11/2026) and a
  phone number written with "+" and at most 15 digits (E.164's maximum).

Why python-stdnum for the IBAN check: the mod-97 step is a few lines, but the registry (which
countries use IBANs, each one's length and format) is data that changes as countries join, and
python-stdnum keeps it current with no dependencies of its own. It is only asked about
candidates, which ordinary text rarely holds.

Cost: text shorter than 13 characters is answered at once; text with fewer than 13 digits
(almost every header, query and form field) skips the card-number search after one pass of
str.count per digit, and text without a run of 13 after one regular expression; the IBAN
search looks for "two letters and two digits at the start of a word" with str.translate and
str.find, and checks the few it finds. ASCII text skips normalisation. `bench/cardguard.py`
prints figures.
"""

import re
import string
import unicodedata
from functools import cache, lru_cache

from stdnum import iban as stdnum_iban
from stdnum import numdb

MIN_DIGITS = 13
MAX_DIGITS = 19
_DIGITS = "0123456789"

# After normalisation every separator is one of these three characters.
_RUN = re.compile(r"[0-9](?:[ .\-]?[0-9])*")
_LONG_RUN = re.compile(r"[0-9](?:[ .\-]?[0-9]){12,}")
_GROUP_SPLIT = re.compile(r"[ .\-]")

# IBANs (see the module docstring). A candidate starts with a head, two letters and two digits
# at the start of a word; a body of letters and digits follows, single separators allowed.
# Heads are looked for in the text's character classes ("a" for an ASCII letter or "_", "0" for
# a digit, other characters as they are): str.translate and str.find run in C, several times
# faster than a regular expression tried at every position (bench/cardguard.py).
_CLASSES = str.maketrans(string.ascii_letters + "_" + string.digits, "a" * 53 + "0" * 10)
_IBAN_HEAD = "aa00"
_IBAN_BODY = re.compile(r"(?:[ .\-]?[A-Za-z0-9])+")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_]")
IBAN_MIN_LENGTH = 15  # Norway's; the registry's longest is 33 (Russia)
_IBAN_REGISTRY = numdb.get("iban")
_IBAN_STRUCTURE = re.compile(r"([1-9][0-9]*)!([nac])")  # "8!n10!n": 8 digits, 10 digits

# Shapes that carry long digit runs and are not card numbers (see the module docstring). Each
# found span is blanked before runs are read.
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
# What a log keeps of a masked IBAN: its country code and its last 4, as we keep of an account.
_IBAN_KEPT_HEAD, _IBAN_KEPT_TAIL = 2, 4

CARD_NUMBER = "card_number"
IBAN = "iban"


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
    # Anything else only needs to not be read as a digit or a separator; kept as it is (NFKC
    # folded: a full-width letter is its ASCII letter), so the shapes above (IBAN letters, UUID
    # hex) stay recognisable.
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


# --- IBANs ------------------------------------------------------------------------------------


@cache
def _iban_length(country: str) -> int:
    """How many letters and digits an IBAN of `country` has, by the registry; 0 when the
    country has no IBAN."""
    structure = _IBAN_REGISTRY.info(country)[0][1].get("bban")
    if not structure:
        return 0
    return 4 + sum(int(count) for count, _ in _IBAN_STRUCTURE.findall(structure))


def _iban_end(text: str, start: int, body_end: int, length: int) -> int:
    """Where the `length`-th letter or digit from `start` ends, or 0 if there are fewer."""
    seen = 0
    for index in range(start, body_end):
        if text[index] not in " .-":
            seen += 1
            if seen == length:
                return index + 1
    return 0


def _iban_heads(text: str):
    """Where two ASCII letters and two digits start a word (no letter, digit or "_" before)."""
    classes = text.translate(_CLASSES)
    found = classes.find(_IBAN_HEAD)
    while found != -1:
        if found == 0 or classes[found - 1] not in "a0":
            yield found
        found = classes.find(_IBAN_HEAD, found + 1)


def _iban_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each IBAN in `text`, which must be normalised."""
    if len(text) < IBAN_MIN_LENGTH:
        return []
    spans = []
    for start in _iban_heads(text):
        if spans and start < spans[-1][1]:
            continue
        length = _iban_length(text[start : start + 2].upper())
        if not length:
            continue
        body = _IBAN_BODY.match(text, start + 4)
        end = _iban_end(text, start, body.end(), length) if body else 0
        if not end or (end < len(text) and _WORD_CHAR.match(text, end)):
            continue  # too short, or glued to what follows: not this country's IBAN
        if stdnum_iban.is_valid(_GROUP_SPLIT.sub("", text[start:end]), check_country=False):
            spans.append((start, end))
    if spans:
        # A UUID's groups can line up as an IBAN's ("be12..." and 12 digits: 1 in 20 million);
        # it is a UUID.
        uuids = [match.span() for match in _UUID.finditer(text)]
        spans = [s for s in spans if not any(u[0] < s[1] and s[0] < u[1] for u in uuids)]
    return spans


# --- Card numbers -----------------------------------------------------------------------------


def _date_valid(match: re.Match) -> bool:
    month = int(match["m1"] or match["m2"])
    day = int(match["d1"] or match["d2"])
    return 1 <= month <= 12 and 1 <= day <= 31


def _without_known_shapes(text: str, ibans) -> str:
    for start, end in ibans:
        text = _blank(text, start, end)
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


def _card_number_runs(text: str, ibans: list[tuple[int, int]] | None = None):
    """(start, end) of each run in `text` holding a card number; `text` must be normalised,
    `ibans` the IBANs in it if already known (their digits are no card number)."""
    if _digit_count(text) < MIN_DIGITS or not _LONG_RUN.search(text):
        return
    if ibans is None:
        ibans = _iban_spans(text)
    scanned = _without_known_shapes(text, ibans)
    for match in _RUN.finditer(scanned):
        run = match.group()
        if len(run) >= MIN_DIGITS and _digit_count(run) >= MIN_DIGITS:
            if _run_has_card_number(run):
                yield match.span()


# --- What callers use -------------------------------------------------------------------------


def contains_card_number(text: str) -> bool:
    """Whether `text` holds a card number, in any of the forms the module docstring lists."""
    if not text or len(text) < MIN_DIGITS:
        return False
    return next(_card_number_runs(_normalise(text)), None) is not None


def contains_iban(text: str) -> bool:
    """Whether `text` holds an IBAN, in any of the forms the module docstring lists."""
    if not text or len(text) < IBAN_MIN_LENGTH:
        return False
    return bool(_iban_spans(_normalise(text)))


def card_data_kind(text: str) -> str | None:
    """CARD_NUMBER or IBAN for the first kind of card data found in `text`, else None: one
    normalisation for both searches (the card-number guard asks this of every value)."""
    if not text or len(text) < MIN_DIGITS:
        return None
    normalised = _normalise(text)
    if _digit_count(normalised) < 2:
        return None  # no IBAN without its two check digits, no card number without 13
    ibans = _iban_spans(normalised)
    if ibans:
        return IBAN
    if next(_card_number_runs(normalised, ibans), None) is not None:
        return CARD_NUMBER
    return None


def contains_card_data(text: str) -> bool:
    """Whether `text` holds a card number or an IBAN."""
    return card_data_kind(text) is not None


def card_data_positions(text: str) -> list[int]:
    """The positions of the characters of `text` a log must not keep: every digit of each run
    holding a card number (the run's other digits too: a CVC or expiry written next to the
    number goes with it), and every letter and digit of an IBAN but its country code and its
    last 4."""
    if not text or len(text) < MIN_DIGITS:
        return []
    normalised = _normalise(text)
    ibans = _iban_spans(normalised)
    positions = []
    for start, end in ibans:
        kept = [i for i in range(start, end) if normalised[i] not in " .-"]
        positions += kept[_IBAN_KEPT_HEAD:-_IBAN_KEPT_TAIL]
    for start, end in _card_number_runs(normalised, ibans):
        positions += [i for i in range(start, end) if normalised[i].isdigit()]
    return sorted(positions)


def mask_card_data(text: str) -> str:
    """`text` with card numbers and IBANs masked in place (`card_data_positions` become "*")."""
    positions = card_data_positions(text)
    if not positions:
        return text
    chars = list(text)
    for index in positions:
        chars[index] = "*"
    return "".join(chars)
