"""Every URL of the project, with a card number in every place a request can carry one.

Each request must be refused (400, by the card-number guard), and afterwards no table and no
log line holds the number in any form. URL parameters are filled from real objects and the
client is logged in as a superuser, so without the number each request would reach its view
(the last test shows that none of them is refused then).
"""

import io
import json
import logging
import re
import unicodedata
import uuid

import pytest
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from billing import api_services
from billing import services as billing_services
from billing.models import ChargeIssue
from cards import services as card_services
from core.logging import mask_log_text
from recurring import services as recurring_services
from tests.card_data import card_numbers_in_database
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

NUMBER = "4242424242424242"
REFUSAL_TITLE = "Request refused: it contained a card number"
HARMLESS_FORM = {"note": "hello"}


# --- Every URL, filled from real objects ------------------------------------------------------


def _routes(resolver=None, prefix=""):
    """The full route of every URL pattern, as written (route syntax or regex)."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern, route)
        else:
            yield route


# Named parameters, and the unnamed `([^/]+)` groups of simple_history's "one version of an
# object" page (`<object_id>/history/<history_id>/`).
_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)|(\(\[\^/\]\+\))")


@pytest.fixture
def world():
    """One of everything a URL can name, in one space, and a superuser."""
    space = SpaceFactory(name="Shop", slug="shop")
    user = StaffUserFactory(username="root", is_superuser=True, spaces=[space])
    customer = CustomerFactory(space=space, name="Kim Kunde", external_number="C-1001")
    card = PaymentCardFactory(customer=customer)
    recurring_services.recurring_line_create(
        customer=customer, amount_minor=4990, charge_date=timezone.localdate(), card=card
    )
    recurring_services.recurring_settings_update(
        space=space,
        acting_user=None,
        auto_approve_up_to_minor=0,
        auto_approve_currency="EUR",
        card_reminder_days=None,
    )
    billing_services.charge_issue_start(customer=customer, source=ChargeIssue.Source.STAFF)
    invitation = card_services.card_invitation_send(customer=customer, acting_user=None)
    invite_ref, token = re.search(
        r"/invite/([^/]+)/([^/]+)/$", card_services.card_invitation_url(invitation)
    ).groups()
    api_key = api_services.api_key_create(space=space, name="ERP", acting_user=user)[1]
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="t", task="x", interval=every_minute)
    CrontabSchedule.objects.create()
    SolarSchedule.objects.create(event="sunrise", latitude=0, longitude=0)
    ClockedSchedule.objects.create(clocked_time="2030-01-01T00:00Z")
    return {
        "user": user,
        "api_key": api_key,
        "values": {
            "space_slug": space.slug,
            "invitation_ref": invite_ref,
            "token": token,
            "registration_ref": str(uuid.uuid4()),
            "id": str(user.pk),
            "refund_id": "1",  # none exists: the refund approval page answers 404
            "language": "ja",  # the hosted pages' script catalogue
            "space_id": str(space.pk),  # a space's dashboard
            "content_type_id": str(ContentType.objects.get_for_model(customer).pk),
            "app_label": "cards",
            "url": "nothing-here/",
        },
        "customer_pk": str(customer.pk),
    }


def _route_model(route: str):
    match = re.match(r"admin/(\w+)/(\w+)/", route)
    try:
        return apps.get_model(*match.groups()) if match else None
    except LookupError:
        return None


def _object_id(route: str, world) -> str:
    if route.startswith("admin/r/"):
        return world["customer_pk"]
    model = _route_model(route)
    first = model._default_manager.order_by("pk").first() if model else None
    return str(first.pk) if first else "1"


def _history_id(route: str, world) -> str:
    """A version of the object _object_id names, for simple_history's version page."""
    model = _route_model(route)
    pk = _object_id(route, world)
    record = model.history.filter(**{model._meta.pk.attname: pk}).first() if model else None
    return str(record.history_id) if record else "1"


def _fill(route: str, world, *, first_value=None) -> str:
    """The route with its parameters filled; the first one with `first_value` if given."""
    used = []

    def value(match):
        name = match.group(1) or match.group(2)
        if name is None:  # unnamed: simple_history's object id, then its version
            name = "object_id" if "object_id" not in used else "history_id"
        if first_value is not None and not used:
            used.append(name)
            return first_value
        used.append(name)
        if name == "history_id":
            return _history_id(route, world)
        if name == "object_id":
            return _object_id(route, world)
        return world["values"][name]

    filled = _PARAMETER.sub(value, route)
    if first_value is not None and not used:
        filled = f"{filled.rstrip('/')}/{first_value}/"
    return "/" + filled


@pytest.fixture
def urls(world):
    return [_fill(route, world) for route in _routes()]


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
    path = _fill(route, world, first_value="4242%204242%204242%204242")
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
    routes = list(_routes())
    not_refused = []

    for url, route in zip(urls, routes, strict=True):
        for response in send(logged_in, url, route, world):
            if not _is_refusal(response):
                not_refused.append((route, response.status_code))
            elif _holds_number(response.content.decode()):
                not_refused.append((route, "echoed the number"))

    assert len(routes) > 100  # the walk found the admin, the hosted pages and the API
    assert not_refused == []
    assert card_numbers_in_database() == []
    logged = console_output.getvalue()
    assert "Refused a request: card_number_refused" in logged  # the handler did write
    for text in (logged, caplog.text):
        assert not _holds_number(text)


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
