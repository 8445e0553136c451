"""The card-number guard (core.middleware): what it reads, what it answers, what it leaves."""

import json
import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from billing import api_services, services
from billing.models import ApiIdempotencyRecord, ChargeIssue, ChargeIssueEvent
from cards.models import Customer
from spaces.roles import ADMIN, CLERK
from tests.card_data import card_numbers_in_database
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

API_URL = "/api/v1/charge-issues"
REFUSAL_TITLE = "Request refused: it contained a card number"
SECURITY_HEADERS = (
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
)


@pytest.fixture
def space():
    return SpaceFactory(name="Shop", slug="shop", default_currency="EUR")


@pytest.fixture
def customer(space):
    customer = CustomerFactory(
        space=space, name="Kim Kunde", email="kim@example.test", external_number="C-1001"
    )
    PaymentCardFactory(customer=customer, last4="1881")
    return customer


@pytest.fixture
def api_key(space):
    admin = StaffUserFactory(username="keyadmin", role=ADMIN, spaces=[space])
    return api_services.api_key_create(space=space, name="Shop ERP", acting_user=admin)[1]


@pytest.fixture
def clerk(space):
    return StaffUserFactory(username="clerk1", role=CLERK, spaces=[space])


def _api_post(client, body, key, **headers):
    return client.post(
        API_URL,
        data=body if isinstance(body, (str, bytes)) else json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}", **headers},
    )


def _register_url(space):
    return reverse("cards:register", kwargs={"space_slug": space.slug})


def _refused(response) -> bool:
    if response.status_code != 400:
        return False
    if response["Content-Type"].startswith("application/json"):
        return response.json()["code"] == "card_number_refused"
    return REFUSAL_TITLE in response.content.decode()


# --- The reported leaks -----------------------------------------------------------------------


def test_a_card_number_as_idempotency_key_is_refused_and_nothing_is_stored(
    client, api_key, customer
):
    body = {"customer": "C-1001", "amount": "12.34"}

    refused = _api_post(client, body, api_key, **{"Idempotency-Key": "4242424242424242"})
    # The same request with an ordinary key is accepted: the refusal is the guard's.
    accepted = _api_post(client, body, api_key, **{"Idempotency-Key": "order-77"})

    assert refused.status_code == 400
    assert refused.json()["code"] == "card_number_refused"
    assert accepted.status_code == 201
    assert list(ApiIdempotencyRecord.objects.values_list("key", flat=True)) == ["order-77"]
    assert ChargeIssue.objects.count() == 1
    assert card_numbers_in_database() == []


@pytest.mark.parametrize(
    "reference", ["4242 4242 4242 4242 12/34", "4242424242424242 123", "\u0034242424242424242"]
)
def test_a_card_number_in_the_api_reference_is_refused(client, api_key, customer, reference):
    response = _api_post(client, {"customer": "C-1001", "reference": reference}, api_key)

    assert response.status_code == 400
    assert response.json()["code"] == "card_number_refused"
    assert not ChargeIssue.objects.exists()
    assert card_numbers_in_database() == []


def test_a_card_number_with_expiry_as_the_admin_customer_name_is_refused(client, space, clerk):
    client.force_login(clerk)
    data = {"space": space.pk, "name": "Kim 4242 4242 4242 4242 12/34", "email": "k@example.test"}

    response = client.post(reverse("admin:cards_customer_add"), data)

    assert _refused(response)
    assert not Customer.objects.exists()
    assert card_numbers_in_database() == []


def test_a_card_number_with_cvc_in_the_amount_entry_wording_is_refused(client, clerk, customer):
    issue = services.charge_issue_start(customer=customer, source=ChargeIssue.Source.STAFF)
    client.force_login(clerk)
    entry = {
        "amount": "49.90",
        "currency": "EUR",
        "notification_subject": "Your order",
        "notification_body": "We charge the card 4242424242424242 123 for order 1234.",
        "charge_date": "",
    }

    response = client.post(
        reverse("admin:billing_chargeissue_enter_amount", args=[issue.pk]), entry
    )

    assert _refused(response)
    issue.refresh_from_db()
    assert issue.amount_minor is None and issue.notification_body == ""
    assert ChargeIssueEvent.objects.filter(issue=issue).count() == 1  # "started" only
    assert card_numbers_in_database() == []


# --- What the guard reads ---------------------------------------------------------------------


def test_the_path_is_read_percent_decoded_and_nothing_logs_it(client, space, caplog):
    caplog.set_level(logging.DEBUG)

    response = client.get("/register/4242%204242%204242%204242/")

    assert _refused(response)
    assert "4242" not in caplog.text
    # Django logs "Bad Request: <path>" for a 400 unless the response says it was logged.
    assert not [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in caplog.records if r.name == "core.middleware"] == [
        "Refused a request: card_number_refused (in the path)."
    ]


def test_a_card_number_in_a_header_name_or_a_cookie_value_is_refused(client, space):
    by_name = client.get(_register_url(space), headers={"X-4242424242424242": "1"})
    # An octal escape in a quoted value, which request.COOKIES decodes: "\\064" is "4".
    client.cookies["note"] = ""
    client.cookies["note"].set("note", "", '"\\064242424242424242"')
    by_cookie = client.get(_register_url(space))

    assert _refused(by_name) and _refused(by_cookie)


def test_a_multipart_field_and_a_file_name_are_read(client, space):
    field = client.post(_register_url(space), {"name": "４２４２４２４２４２４２４２４２"})
    upload = SimpleUploadedFile("4242-4242-4242-4242.txt", b"nothing")
    file_name = client.post(_register_url(space), {"name": "Kim", "attachment": upload})

    assert _refused(field) and _refused(file_name)
    assert not Customer.objects.exists()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-16-le"])
def test_a_json_body_in_utf_16_or_32_is_read_as_the_view_reads_it(
    client, api_key, customer, encoding
):
    body = json.dumps({"customer": "C-1001", "reference": "4242424242424242"})

    response = _api_post(client, body.encode(encoding), api_key)

    assert response.status_code == 400
    assert response.json()["code"] == "card_number_refused"


def test_a_json_body_declaring_latin_1_is_also_read_as_json_guesses_it(client, space):
    body = json.dumps({"reference": "4242424242424242"}).encode("utf-16")

    response = client.generic(
        "POST", API_URL, data=body, content_type="application/json; charset=latin-1"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "card_number_refused"


def test_ordinary_numbers_reach_the_view(client, api_key, customer):
    # A reference, a phone number, a date, an amount, an order number, a UUID, a VAT id and a
    # bank's last 4, all at once.
    reference = "INV-DE-2026-000123"
    body = {
        "customer": "C-1001",
        "amount": "1234.56",
        "reference": reference,
        "notification_body": (
            "Order 1234567890 of 22.11.2026, questions to +49 151 23456789, "
            "ref 123e4567-e89b-12d3-a456-426614174000, VAT DE123456789, "
            "from your account DE ending in 3000"
        ),
    }

    response = _api_post(client, body, api_key, **{"Idempotency-Key": "2026-11-22-0001"})

    assert response.status_code == 201, response.content
    assert ChargeIssue.objects.get().external_reference == reference


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "fr14-2004-1010-0505-0001-3m02-606",
        "GB29NWBK60161331926819",
        "\\u0044E89370400440532013000",  # escaped in the JSON text
    ],
)
def test_an_iban_in_a_json_body_is_refused_and_nothing_is_made(client, api_key, customer, iban):
    body = json.dumps({"customer": "C-1001", "amount": "12.00", "reference": "x"})
    body = body.replace('"x"', f'"{iban}"')

    response = _api_post(client, body, api_key)

    assert response.status_code == 400
    assert response.json()["code"] == "iban_refused"
    assert not ChargeIssue.objects.exists()


def test_an_iban_in_a_form_is_refused_with_a_page_that_says_why(client, space):
    response = client.post(
        _register_url(space),
        "name=Kim&note=DE89+3704+0044+0532+0130+00",
        content_type="application/x-www-form-urlencoded",
    )

    body = response.content.decode()
    assert response.status_code == 400
    assert "Request refused: it contained a bank account number" in body
    assert "0532" not in body


# --- Bodies it cannot read --------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["utf-16", "latin-1"])
@pytest.mark.parametrize("where", ["admin login", "registration page"])
def test_a_form_post_in_another_charset_gets_a_400_page_asking_for_utf_8(
    client, space, charset, where
):
    url = "/admin/login/" if where == "admin login" else _register_url(space)
    body = "name=Kim+K%C3%BCnde&email=kim%40example.test&username=a&password=b"

    # generic(): post() would encode the body again in the declared charset.
    response = client.generic(
        "POST",
        url,
        data=body.encode(charset),
        content_type=f"application/x-www-form-urlencoded; charset={charset}",
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert "UTF-8" in page and 'href="/static/core/errors.css"' in page
    assert not Customer.objects.exists()
    assert "sessionid" not in response.cookies and "csrftoken" not in response.cookies


def test_a_body_that_its_charset_cannot_decode_or_an_unknown_charset_is_refused(client, space):
    bad_bytes = client.post(
        API_URL, data=b'{"reference": "caf\xe9"}', content_type="application/json"
    )
    unknown = client.generic(
        "POST",
        API_URL,
        data=b'{"reference": "x"}',
        content_type="application/json; charset=klingon",
    )
    bad_form = client.post(
        _register_url(space),
        data=b"name=K%FCnde&email=k%40example.test",
        content_type="application/x-www-form-urlencoded",
    )

    assert [r.status_code for r in (bad_bytes, unknown, bad_form)] == [400, 400, 400]
    assert bad_bytes.json()["code"] == unknown.json()["code"] == "body_not_decodable"
    assert "UTF-8" in bad_form.content.decode()


# --- The refusal ------------------------------------------------------------------------------


def test_the_refusal_page_is_styled_says_what_happened_and_links_back(client, space):
    page_url = f"http://testserver{_register_url(space)}"
    data = {"name": "4242 4242 4242 4242"}

    from_our_page = client.post(_register_url(space), data, headers={"Referer": page_url})
    from_elsewhere = client.post(
        _register_url(space), data, headers={"Referer": "https://evil.example/x"}
    )

    html = from_our_page.content.decode()
    assert from_our_page.status_code == 400
    assert REFUSAL_TITLE in html and "enter them only in the secure card field" in html
    assert 'href="/static/core/errors.css"' in html
    assert f'href="{page_url}"' in html
    assert "evil.example" not in from_elsewhere.content.decode()
    assert "4242" not in html


def test_the_refusal_never_links_back_to_a_referer_holding_the_card_number(client, space):
    referer = f"http://testserver{_register_url(space)}?q=4242424242424242"

    response = client.get(_register_url(space), headers={"Referer": referer})

    assert _refused(response)
    assert "4242" not in response.content.decode()


def test_api_paths_and_json_clients_get_json(client, space):
    api = client.get(API_URL, {"q": "4242424242424242"})
    asks_json = client.get(
        _register_url(space), {"q": "4242424242424242"}, headers={"Accept": "application/json"}
    )

    for response in (api, asks_json):
        assert response.status_code == 400
        assert response.json()["code"] == "card_number_refused"
        assert "card number" in response.json()["error"]


@pytest.mark.parametrize("where", ["admin login", "registration page", "api"])
def test_the_refusal_carries_the_security_headers_of_a_normal_page(client, space, api_key, where):
    url = {
        "admin login": "/admin/login/",
        "registration page": _register_url(space),
        "api": API_URL,
    }[where]
    normal = (
        _api_post(client, {}, api_key) if where == "api" else client.get(url)
    )  # a 400 "invalid" from the view itself, for the API

    refused = client.get(url, {"q": "4242424242424242"})

    assert _refused(refused)
    for header in SECURITY_HEADERS:
        assert normal.has_header(header), header
        assert refused[header] == normal[header], header
    if normal.has_header("Content-Security-Policy"):
        assert "frame-ancestors 'none'" in refused["Content-Security-Policy"]
    assert refused["Cache-Control"] == "no-store"


def test_a_refused_request_loads_no_session_and_sets_no_cookie(client, space, clerk):
    client.force_login(clerk)

    response = client.get("/admin/", {"q": "4242424242424242"})

    assert _refused(response)
    assert not response.cookies
    assert not hasattr(response.wsgi_request, "session")
    assert not hasattr(response.wsgi_request, "user")
