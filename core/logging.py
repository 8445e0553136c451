"""Logging filters. `CardNumberMaskingFilter` sits on every handler in settings.LOGGING.

A second line of defence behind the card-number guard (core.middleware): whatever a record
holds, a card number in its message, its arguments, its exception text or its stack is masked
before any handler writes it. It also reads the message percent-decoded and with Python escapes
undone, because Django logs paths percent-encoded (runserver's request line) or
unicode-escaped (`django.request`'s "Bad Request: /…").
"""

import logging
import re
from urllib.parse import unquote_plus

from .cardguard import contains_card_number, mask_card_numbers

_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")


def _unescaped(text: str) -> str:
    return _ESCAPE.sub(lambda match: chr(int(match.group()[2:], 16)), text)


def mask_log_text(text: str) -> str:
    """`text` with card numbers masked; when one is only visible decoded (percent-encoding,
    Python escapes), the decoded text, masked."""
    masked = mask_card_numbers(text)
    candidates = []
    if "%" in masked or "+" in masked:
        candidates.append(unquote_plus(masked))
    if "\\" in masked:
        candidates.append(_unescaped(masked))
        candidates.append(_unescaped(unquote_plus(masked)))
    for candidate in candidates:
        if contains_card_number(candidate):
            return mask_card_numbers(candidate)
    return masked


class CardNumberMaskingFilter(logging.Filter):
    """Masks card numbers in a record (message with its arguments, exception and stack text).
    Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as it would
            message = None
        if message is not None:
            masked = mask_log_text(message)
            if masked != message:
                record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # What the formatter would write; it uses exc_text when set.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_log_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_log_text(record.stack_info)
        return True
