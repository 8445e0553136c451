"""Every URL of the project, with a card number in every place a request can carry one.

Each request must be refused (400, by the card-number guard), and afterwards no table and no
log line holds the number in any form. URL parameters are filled from real objects and the
client is logged in as a superuser, so without the number each request would reach its view
(the last test shows that none of them is refused then).
"""

import io
import json
import logging
import unicodedata

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from core.logging import mask_log_text
from tests.card_data import card_numbers_in_database
from tests.url_walk import fill, one_of_everything, routes

pytestmark = pytest.mark.django_db

NUMBER = "4242424242424242"
REFUSAL_TITLE = "Request refused: it contained a card number"
HARMLESS_FORM = {"note": "hello"}


# --- Every URL, filled from real objects (tests/url_walk.py) --------------------------------


@pytest.fixture
def world():
    return one_of_everything()


@pytest.fixture
def urls(world):
    return [fill(route, world) for route in routes()]


@pytest.fixture
def logged_in(client, world):
    client.force_login(world["user"])
    return client


# --- The places a card number can be ----------------------------------------------------------


def _form(client, url, data, **kwargs):
    return client.post(url, data, **kwargs)


def _json(client, url, body, **kwargs):
    return client.generic("POST", url, body, content_type="application/json", **kwargs)


def _path(client, url, route, world):
    path = fill(route, world, first_value="4242%204242%204242%204242")
    return [client.get(path), client.post(path, HARMLESS_FORM)]


def _query(client, url, route, world):
    query = {"q": "4242 4242 4242 4242"}
    return [client.get(url, query), client.post(f"{url}?q=4242+4242+4242+4242", HARMLESS_FORM)]


def _cookie(client, url, route, world):
    client.cookies["note"] = NUMBER
    try:
        return [client.get(url), client.post(url, HARMLESS_FORM)]
    finally:
        del client.cookies["note"]


def _multipart_file_name(client, url, route, world):
    upload = SimpleUploadedFile(f"scan {NUMBER}.pdf", b"%PDF-1.4")
    return [client.post(url, {"note": "hello", "attachment": upload})]


PLACES = {
    "path": _path,
    "query": _query,
    "Idempotency-Key header": lambda c, url, *_: [
        _json(c, url, json.dumps({"customer": "C-1001"}), headers={"Idempotency-Key": NUMBER})
    ],
    "custom header": lambda c, url, *_: [
        _form(c, url, HARMLESS_FORM, headers={"X-Note": "4242-4242-4242-4242"})
    ],
    "cookie": _cookie,
    "form field": lambda c, url, *_: [_form(c, url, {"name": NUMBER, "email": "a@b.test"})],
    "multipart field": lambda c, url, *_: [
        _form(c, url, {"name": "4242-4242-4242-4242", "attachment": SimpleUploadedFile("a", b"")})
    ],
    "multipart file name": _multipart_file_name,
    "JSON string": lambda c, url, *_: [
        _json(c, url, json.dumps({"customer": "C-1001", "reference": "4242 4242 4242 4242"}))
    ],
    "JSON \\u escape": lambda c, url, *_: [
        _json(c, url, '{"customer": "C-1001", "reference": "\\u0034242424242424242"}')
    ],
    "UTF-16 JSON body": lambda c, url, *_: [
        _json(c, url, json.dumps({"customer": "C-1001", "reference": NUMBER}).encode("utf-16"))
    ],
    "no-break spaces": lambda c, url, *_: [
        _form(c, url, {"name": "4242\u00a04242\u00a04242\u00a04242"})
    ],
    "full-width digits": lambda c, url, *_: [
        _form(c, url, {"name": "４２４２４２４２４２４２４２４２"})
    ],
    "followed by an expiry": lambda c, url, *_: [
        _form(c, url, {"name": "4242 4242 4242 4242 12/34"})
    ],
    "followed by a CVC": lambda c, url, *_: [
        _json(c, url, json.dumps({"customer": "C-1001", "reference": f"{NUMBER} 123"}))
    ],
}


# --- Checks -----------------------------------------------------------------------------------


def _is_refusal(response) -> bool:
    if response.status_code != 400:
        return False
    if response["Content-Type"].startswith("application/json"):
        return response.json().get("code") == "card_number_refused"
    return REFUSAL_TITLE in response.content.decode()


def _holds_number(text: str) -> bool:
    """The digits in any form: separators of any kind, Unicode digits, encoded or escaped."""
    if mask_log_text(text) != text:
        return True
    digits = "".join(c for c in unicodedata.normalize("NFKC", text) if c.isdigit() or c == "\n")
    return NUMBER in digits


@pytest.fixture
def console_output():
    """What the console handler of settings.LOGGING writes during the test."""
    (console,) = [h for h in logging.getLogger().handlers if h.name == "console"]
    stream = io.StringIO()
    previous = console.setStream(stream)
    yield stream
    console.setStream(previous)


@pytest.mark.parametrize("place", PLACES)
def test_a_card_number_anywhere_in_any_request_is_refused_and_kept_nowhere(
    logged_in, world, urls, place, caplog, console_output
):
    caplog.set_level(logging.DEBUG)
    send = PLACES[place]
    every_route = list(routes())
    not_refused = []

    for url, route in zip(urls, every_route, strict=True):
        for response in send(logged_in, url, route, world):
            if not _is_refusal(response):
                not_refused.append((route, response.status_code))
            elif _holds_number(response.content.decode()):
                not_refused.append((route, "echoed the number"))

    assert len(every_route) > 100  # the walk found the admin, the hosted pages and the API
    assert not_refused == []
    assert card_numbers_in_database() == []
    logged = console_output.getvalue()
    assert "Refused a request: card_number_refused" in logged  # the handler did write
    for text in (logged, caplog.text):
        assert not _holds_number(text)


# --- IBANs, the card number's sibling ---------------------------------------------------------

IBAN = "DE89 3704 0044 0532 0130 00"
IBAN_REFUSAL_TITLE = "Request refused: it contained a bank account number"

IBAN_PLACES = {
    "path": lambda c, url, route, world: [
        c.get(fill(route, world, first_value=IBAN.replace(" ", "%20")))
    ],
    "query": lambda c, url, *_: [c.get(url, {"q": IBAN.lower()})],
    "form field": lambda c, url, *_: [_form(c, url, {"name": IBAN.replace(" ", "-")})],
    "multipart field": lambda c, url, *_: [
        _form(c, url, {"note": IBAN, "attachment": SimpleUploadedFile("a", b"")})
    ],
    "JSON string": lambda c, url, *_: [
        _json(c, url, json.dumps({"customer": "C-1001", "reference": IBAN.replace(" ", "")}))
    ],
    "JSON \\u escape": lambda c, url, *_: [
        _json(c, url, '{"customer": "C-1001", "reason": "\\u0044E89370400440532013000"}')
    ],
    "header": lambda c, url, *_: [_form(c, url, HARMLESS_FORM, headers={"X-Note": IBAN})],
}


def _is_iban_refusal(response) -> bool:
    if response.status_code != 400:
        return False
    if response["Content-Type"].startswith("application/json"):
        return response.json().get("code") == "iban_refused"
    return IBAN_REFUSAL_TITLE in response.content.decode()


@pytest.mark.parametrize("place", IBAN_PLACES)
def test_an_iban_anywhere_in_any_request_is_refused_and_kept_nowhere(
    logged_in, world, urls, place, console_output
):
    not_refused = []

    for url, route in zip(urls, routes(), strict=True):
        for response in IBAN_PLACES[place](logged_in, url, route, world):
            if not _is_iban_refusal(response):
                not_refused.append((route, response.status_code))
            elif "0532" in response.content.decode():
                not_refused.append((route, "echoed the IBAN"))

    assert not_refused == []
    assert card_numbers_in_database() == []  # card numbers and IBANs, in any form
    logged = console_output.getvalue()
    assert "Refused a request: iban_refused" in logged and "0532" not in logged


def test_without_the_card_number_no_url_is_refused(logged_in, urls, caplog):
    """The same walk with harmless values: the session cookie, the CSRF cookie and every
    filled URL pass the guard, and the admin pages answer the logged-in user."""
    statuses = {}
    for url in urls:
        response = logged_in.get(url, {"q": "order 1234567890"}, headers={"X-Note": "hello"})
        assert not _is_refusal(response), url
        statuses[url] = response.status_code

    assert statuses["/admin/"] == 200
    assert statuses["/admin/billing/chargeissue/"] == 200
    assert statuses["/healthz"] in (200, 503)
    assert not [url for url, status in statuses.items() if status >= 500]
    # The walk reaches real pages: read-only admins (add, change and delete answer 403), the
    # redirects of step views and POST-only endpoints (405) account for the rest.
    assert sum(status == 200 for status in statuses.values()) > len(urls) // 3
