"""Logging: the card-data mask on every handler, the log context (request id, task id, space,
issue) and the JSON-lines formatter production uses (python-json-logger underneath).

`CardNumberMaskingFilter` sits on every handler in settings.LOGGING and gunicorn's.

A second line of defence behind the card-number guard (core.middleware): whatever a record
holds, a card number or an IBAN in its message, its arguments, its exception text or its stack
is masked before any handler writes it. It also reads the message percent-decoded and with
Python escapes undone, because Django logs paths percent-encoded (runserver's request line) or
unicode-escaped (`django.request`'s "Bad Request: /…").

Masking is always in place: what is found in a decoded reading is mapped back to the characters
of the line it was decoded from, and only those are replaced. The rest of the line stays as it
was written: decoding it would turn "%0A" into a real line break (a forged log line, in plain
text logs) and "+" into a space.
"""

import codecs
import logging
import re
from contextvars import ContextVar, Token
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

from .cardguard import card_data_positions, mask_card_data

_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")
_PERCENT_RUN = re.compile(r"(?:%[0-9a-fA-F]{2})+")

# A decoded reading of a text: the decoded text, and for each of its characters the span
# (start, end) of the text it came from.
Decoded = tuple[str, list[tuple[int, int]]]


def _percent_decoded(text: str) -> Decoded:
    """What urllib.parse.unquote_plus reads in `text` ("+" a space, runs of %XX bytes as UTF-8
    with errors replaced), with the span each character came from."""
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    done = 0
    for run in _PERCENT_RUN.finditer(text):
        for index in range(done, run.start()):
            chars.append(" " if text[index] == "+" else text[index])
            spans.append((index, index + 1))
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = run.start()  # where the bytes of the character being decoded began
        for index in range(run.start(), run.end(), 3):
            final = index + 3 == run.end()
            piece = decoder.decode(bytes([int(text[index + 1 : index + 3], 16)]), final=final)
            for char in piece:
                chars.append(char)
                spans.append((pending, index + 3))
            if piece:
                pending = index + 3
        done = run.end()
    for index in range(done, len(text)):
        chars.append(" " if text[index] == "+" else text[index])
        spans.append((index, index + 1))
    return "".join(chars), spans


def _unescaped(text: str) -> Decoded:
    """`text` with Python's \\xNN, \\uNNNN and \\UNNNNNNNN escapes undone, with spans."""
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    done = 0
    for escape in _ESCAPE.finditer(text):
        chars.extend(text[done : escape.start()])
        spans.extend((index, index + 1) for index in range(done, escape.start()))
        chars.append(chr(int(escape.group()[2:], 16)))
        spans.append(escape.span())
        done = escape.end()
    chars.extend(text[done:])
    spans.extend((index, index + 1) for index in range(done, len(text)))
    return "".join(chars), spans


def _then(first: Decoded, decode) -> Decoded:
    """`decode` applied to the reading `first`, its spans mapped back to the original text."""
    text, outer = first
    decoded, inner = decode(text)
    return decoded, [(outer[start][0], outer[end - 1][1]) for start, end in inner]


def _percent_then_unescaped(text: str) -> Decoded:
    """Percent-decoded, then Python escapes undone ("%5Cu0034..."), spans mapped back."""
    return _then(_percent_decoded(text), _unescaped)


def _masked_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each span (in order; equal or disjoint) replaced by one "*"."""
    parts, done = [], 0
    for start, end in spans:
        if start < done:
            continue  # several decoded characters from the same bytes: masked once
        parts += [text[done:start], "*"]
        done = end
    parts.append(text[done:])
    return "".join(parts)


def _mask_reading(text: str, reading) -> str:
    """`text` with the card data that `reading` (a decoding) shows masked in place."""
    decoded, spans = reading(text)
    positions = card_data_positions(decoded)
    if not positions:
        return text
    return _masked_spans(text, [spans[index] for index in positions])


def mask_log_text(text: str) -> str:
    """`text` with card numbers and IBANs masked in place, including those only visible
    decoded (percent-encoding, Python escapes, or both): each decoded character that is masked
    replaces the characters it was decoded from, and nothing else of the text changes."""
    masked = mask_card_data(text)
    if "%" in masked or "+" in masked:
        masked = _mask_reading(masked, _percent_decoded)
        if "%5c" in masked.lower():
            masked = _mask_reading(masked, _percent_then_unescaped)
    if "\\" in masked:
        masked = _mask_reading(masked, _unescaped)
    return masked


class CardNumberMaskingFilter(logging.Filter):
    """Masks card numbers and IBANs in a record (message with its arguments, exception and
    stack text). Never drops a record."""

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


# --- Context and JSON lines -------------------------------------------------------------------
# What the current request or task is about, for every record logged while it runs: the request
# id (core.middleware.RequestIdMiddleware), the Celery task id (config/celery.py), and the space
# and charging issue where the code handling it knows them (`log_context_bind`). A contextvar, so
# threads (gunicorn's gthread workers) and tasks each see their own.
_CONTEXT: ContextVar[dict | None] = ContextVar("log_context", default=None)


def log_context_bind(**fields) -> None:
    """Add fields (request_id, task_id, task, space, issue) to what this request or task logs."""
    _CONTEXT.set({**(_CONTEXT.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def log_context_start(**fields) -> Token:
    """A fresh context for a new request or task; `log_context_end(token)` restores the old."""
    return _CONTEXT.set({k: v for k, v in fields.items() if v is not None})


def log_context_end(token: Token) -> None:
    _CONTEXT.reset(token)


def log_context() -> dict:
    return dict(_CONTEXT.get() or {})


def _masked(value):
    """`extra=` values with card numbers masked, inside dicts and lists too (Celery logs a task's
    arguments and result as a `data` dict)."""
    if isinstance(value, str):
        return mask_log_text(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return mask_log_text(str(value))


class JsonLinesFormatter(JsonFormatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then the
    request id, task id, space and issue where known, any `extra=` fields, and the exception.

    The masking filter runs before (it sits on the handler), so message and exception text are
    already masked; `extra=` values are masked here too, as they bypass the message."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)

    def add_fields(self, log_data, record, message_dict):
        log_data["time"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.getMessage()
        for key, value in log_context().items():
            log_data[key] = value
        super().add_fields(log_data, record, message_dict)
        for key, value in list(log_data.items()):
            if key not in ("time", "level", "logger", "message"):
                log_data[key] = _masked(value)
        # The message is already the formatted text; python-json-logger would add it again.
        log_data.pop("msg", None)
