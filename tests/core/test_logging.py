"""The card-number mask on every log handler (core.logging, settings.LOGGING)."""

import io
import logging
import unicodedata

import pytest
from celery import signals

from core.logging import CardNumberMaskingFilter, mask_log_text

LOGGERS = (
    "",
    "django",
    "django.request",
    "django.server",
    "django.security.csrf",
    "django.db.backends",
    "celery",
    "celery.task",
    "celery.worker",
    "celery.redirected",
    "core.middleware",
    "billing.api",
)


def card_number_in(text: str) -> bool:
    """Whether the test number's digits are in `text` in any form: with any separators, in
    full-width digits, percent-encoded, escaped."""
    if mask_log_text(text) != text:
        return True
    digits = "".join(
        char for char in unicodedata.normalize("NFKC", text) if char.isdigit() or char == "\n"
    )
    return "4242424242424242" in digits


def _handlers_reached(name: str) -> list[logging.Handler]:
    logger, handlers = logging.getLogger(name), []
    while logger:
        handlers += logger.handlers
        logger = logger.parent if logger.propagate else None
    # pytest's own capture handlers are not ours to configure.
    return [h for h in handlers if not type(h).__module__.startswith("_pytest")]


def _has_mask(handler) -> bool:
    return any(isinstance(f, CardNumberMaskingFilter) for f in handler.filters)


@pytest.mark.parametrize("name", LOGGERS)
def test_every_logger_writes_only_through_handlers_with_the_mask(name):
    handlers = _handlers_reached(name)

    assert handlers, f"{name or 'root'} reaches no handler"
    assert all(_has_mask(handler) for handler in handlers), handlers


@pytest.fixture
def console_output():
    """What the configured console handler (settings.LOGGING) writes, for this test."""
    (console,) = [h for h in logging.getLogger().handlers if h.name == "console"]
    stream = io.StringIO()
    previous = console.setStream(stream)
    yield stream
    console.setStream(previous)


def test_card_numbers_in_any_record_are_masked_in_the_handler_output_and_in_caplog(
    console_output, caplog
):
    caplog.set_level(logging.INFO)
    logging.getLogger("billing.api").warning("customer wrote %s", "4242 4242 4242 4242 12/34")
    logging.getLogger("cards").info("name: ４２４２４２４２４２４２４２４２")
    # runserver's request line (percent-encoded) and django.request's (unicode-escaped).
    logging.getLogger("django.server").info(
        '"%s" %s %s', "GET /x/4242%204242%204242%204242/ HTTP/1.1", 400, 10
    )
    logging.getLogger("django.request").warning(
        "Bad Request: %s", "/x/4242\\xa04242\\xa04242\\xa04242"
    )
    logging.getLogger("celery.task").info("args: %r", ["4242-4242-4242-4242"])
    try:
        raise ValueError("bad value 4242424242424242 123")
    except ValueError:
        logging.getLogger("django.request").exception("Internal Server Error: /api/")

    output = console_output.getvalue()
    assert output.count("\n") >= 6 and "****" in output
    assert "Traceback" in output and "ValueError: bad value" in output
    for text in (output, caplog.text):
        assert not card_number_in(text), text


def test_the_filter_keeps_other_records_as_they_are():
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "order %s of %s", ("1234567890", "49.90 EUR"), None
    )

    assert CardNumberMaskingFilter().filter(record)
    assert (record.msg, record.args) == ("order %s of %s", ("1234567890", "49.90 EUR"))


def test_celery_workers_log_through_the_same_handlers():
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).handlers[:] for name in ("", "celery", "celery.task")}
    try:
        import config.celery  # noqa: F401  (connects the receiver)

        # What a worker or beat sends at start; a receiver means Celery adds no handler itself.
        answered = signals.setup_logging.send(
            sender=None, loglevel=logging.INFO, logfile=None, format="", colorize=False
        )

        assert answered
        assert root.handlers and all(_has_mask(h) for h in _handlers_reached("celery.task"))
    finally:
        for name, handlers in saved.items():
            logging.getLogger(name).handlers = handlers
