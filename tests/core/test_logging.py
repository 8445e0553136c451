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


def test_a_card_number_seen_only_decoded_is_masked_in_place_and_forges_no_line(console_output):
    """The request line of a refused request, as runserver logs it: percent-encoded. Masking
    must not decode the rest of the line, or "%0A" would become a line of its own."""
    raw = "GET /x/4242%204242%204242%204242/?next=%0A2026-01-01+INFO+forged+0000 HTTP/1.1"
    logging.getLogger("django.server").info('"%s" %s %s', raw, 400, 10)
    logging.getLogger("django.request").warning(
        "Bad Request: %s", "/x/4242\\xa04242\\xa04242\\xa04242/+0000%0A"
    )

    written = console_output.getvalue()
    assert written.count("\n") == 2  # two records, two lines
    first, second = written.splitlines()
    assert first.endswith(
        '"GET /x/****%20****%20****%20****/?next=%0A2026-01-01+INFO+forged+0000 HTTP/1.1" 400 10'
    )
    assert second.endswith("Bad Request: /x/****\\xa0****\\xa0****\\xa0****/+0000%0A")
    assert not card_number_in(written)


@pytest.mark.parametrize(
    "text, masked",
    [
        # Percent-encoded digits: each decoded digit replaces its own "%3N".
        ("n=%34%32%34%32%34%32%34%32%34%32%34%32%34%32%34%32&x=%0A", "n=****************&x=%0A"),
        # Percent-encoded, then escaped.
        ("q=%5Cu0034242424242424242+%2B1", "q=****************+%2B1"),
        # Full-width digits, percent-encoded UTF-8 (three bytes each).
        ("name=" + "%EF%BC%94%EF%BC%92" * 8 + "&a=+", "name=" + "*" * 16 + "&a=+"),
        ("iban=DE89+3704+0044+0532+0130+00&x=%0A", "iban=DE**+****+****+****+**30+00&x=%0A"),
        (
            "iban=de89%2D3704%2D0044%2D0532%2D0130%2D00",
            "iban=de**%2D****%2D****%2D****%2D**30%2D00",
        ),
        ("ordinary +0000 %0A %ff 1234567890", "ordinary +0000 %0A %ff 1234567890"),
    ],
)
def test_mask_log_text_changes_only_the_characters_of_the_card_data(text, masked):
    assert mask_log_text(text) == masked


def test_ibans_in_any_record_are_masked(console_output, caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("billing.api").warning("reason was %s", "DE89 3704 0044 0532 0130 00")
    logging.getLogger("django.server").info(
        '"%s" 400 1', "GET /?r=gb29%20nwbk%206016%201331%209268%2019"
    )
    try:
        raise ValueError("bad reference NL91ABNA0417164300")
    except ValueError:
        logging.getLogger("django.request").exception("Internal Server Error: /api/")

    output = console_output.getvalue()
    for text in (output, caplog.text):
        assert "0532" not in text and "1331" not in text and "0417" not in text, text
    assert "DE** **** **** **** **30 00" in output and "NL************4300" in output
