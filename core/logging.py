"""Logging: the card-number mask on every handler, the log context (request id, task id, space,
issue) and the JSON-lines formatter production uses (python-json-logger underneath).

`CardNumberMaskingFilter` sits on every handler in settings.LOGGING and gunicorn's.

A second line of defence behind the card-number guard (core.middleware): whatever a record
holds, a card number in its message, its arguments, its exception text or its stack is masked
before any handler writes it. It also reads the message percent-decoded and with Python escapes
undone, because Django logs paths percent-encoded (runserver's request line) or
unicode-escaped (`django.request`'s "Bad Request: /…").
"""

import logging
import re
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonFormatter

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
