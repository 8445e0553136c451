"""Spotting card numbers in text: a Luhn-valid run of 13 to 19 digits, alone or grouped by
single spaces or dashes (4242 4242 4242 4242, 4242-4242-4242-4242).

Runs starting with 0 are skipped: no payment card number starts with 0 (ISO/IEC 7812), while
zero-filled references (an all-zero UUID is "Luhn-valid") are common.
"""

import re

# A run of digits with optional single space/dash separators, not touching other digits.
_CANDIDATE = re.compile(r"(?<![\d])[1-9](?:[ -]?\d){12,18}(?![\d])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    if not text:
        return False
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False
