"""No input makes a 500: awkward input to every form of the admin steps and to the API, and a
failed CSRF check, a multipart body and a long username anywhere (the shapes a fuzzing of the
whole site found), anonymous and logged in.

Empty, huge, null, wrong types, repeated fields, NUL bytes (PostgreSQL refuses NUL in text),
non-UTF-8 percent escapes in the path, the query and the body. Each answer must be below 500;
a refusal says why (checked elsewhere: here only "never a 500").
"""

import json
from urllib.parse import urlencode

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from billing import api_services, services
from billing.models import ChargeIssue
from payments.models import ProviderEvent
from spaces.roles import ADMIN, APPROVER, CLERK
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory
from tests.url_walk import fill, one_of_everything, routes

pytestmark = pytest.mark.django_db

HUGE = "9" * 100_000
AWKWARD = [
    *("", " ", HUGE, "\x00", "a\x00b", "%ff", "\ufffd", "𝟙𝟚", "-0", "1e309", "NaN", "0x10"),
    *("12,50", "１２.５０", "<script>", "2024-02-30T25:61", "99999-01-01T00:00"),
]
FORM = "application/x-www-form-urlencoded"
WEBHOOK = "/webhooks/stripe"
RAW_BODIES = [b"amount=%ff%fe", b"amount=%00", b"%ff=%ff", b"amount", b"&&&=", b"\xff\xfe\x00"]


@pytest.fixture
def world():
    space = SpaceFactory(slug="probe", default_currency="EUR")
    clerk = StaffUserFactory(username="probe-clerk", role=CLERK, spaces=[space])
    approver = StaffUserFactory(username="probe-approver", role=APPROVER, spaces=[space])
    admin = StaffUserFactory(username="probe-admin", role=ADMIN, spaces=[space])
    customer = CustomerFactory(space=space, external_number="C-1")
    PaymentCardFactory(customer=customer)

    def issue():
        return services.charge_issue_start(customer=customer, source=ChargeIssue.Source.STAFF)

    waiting = issue()
    entered = issue()
    services.charge_amount_enter(
        issue=entered,
        acting_user=clerk,
        amount="12.50",
        currency="EUR",
        notification_subject="s",
        notification_body="b",
    )
    cancelled = services.charge_issue_cancel(issue=issue(), acting_user=clerk)
    _, key = api_services.api_key_create(space=space, name="probe", acting_user=admin)
    return {
        "clerk": clerk,
        "approver": approver,
        "waiting": waiting,
        "entered": entered,
        "cancelled": cancelled,
        "key": key,
    }


def _step(issue, name):
    return f"/admin/billing/chargeissue/{issue.pk}/{name}/"


def _check(response, what):
    assert response.status_code < 500, (what, response.status_code)


def test_admin_step_forms_never_500(client, world):
    client.raise_request_exception = False
    base_entry = {
        "amount": "12.50",
        "currency": "EUR",
        "notification_subject": "s",
        "notification_body": "b",
        "charge_date": "",
    }
    forms = [
        ("clerk", _step(world["waiting"], "enter-amount"), base_entry),
        ("approver", _step(world["entered"], "approval"), {"decision": "return", "comment": "c"}),
        ("clerk", _step(world["waiting"], "cancel"), {"comment": "c"}),
    ]
    for user, url, good in forms:
        client.force_login(world[user])
        for field in good:
            for value in AWKWARD:
                _check(client.post(url, {**good, field: value}), (url, field, value))
            _check(client.post(url, {**good, field: ["12.50", "13"]}), (url, field, "list"))
            missing = {k: v for k, v in good.items() if k != field}
            _check(client.post(url, missing), (url, field, "missing"))
        for raw in RAW_BODIES:
            response = client.generic(
                "POST", url, raw, content_type="application/x-www-form-urlencoded"
            )
            _check(response, (url, raw))
        _check(client.get(url + "?%ff=%ff&a=%00"), (url, "query"))
    client.force_login(world["clerk"])
    for raw in [b"", b"%ff", b"a=\x00"]:
        response = client.generic(
            "POST",
            _step(world["cancelled"], "restart"),
            raw,
            content_type="application/x-www-form-urlencoded",
        )
        _check(response, ("restart", raw))


@pytest.mark.parametrize(
    "path",
    [
        "/admin/billing/chargeissue/?q=%00",
        "/admin/billing/chargeissue/?q=%ff%fe",
        "/admin/billing/chargeissue/?q=" + "x" * 5000,
        "/admin/billing/chargeissue/?state=%00",
        "/admin/billing/chargeissue/?space__id__exact=abc",
        "/admin/billing/chargeissue/?space__id__exact=99999999999999999999999",
        "/admin/billing/chargeissue/?o=abc",
        "/admin/billing/chargeissue/?p=abc",
        "/admin/billing/chargeissue/?created_at__gte=%ff",
        "/admin/cards/customer/?q=%00",
        "/admin/cards/customer/?space=abc",
        "/admin/billing/chargeissue/%00/change/",
        "/admin/billing/chargeissue/%ff/approval/",
        "/admin/billing/chargeissue/1%00/history/",
        "/admin/%ff/",
        "/register/%ff/",
        "/register/%00/",
        "/register/probe/?%ff=%ff&lang=%00",
        "/api/v1/charge-issues?%ff=%00",
        "/api/v1/%ff",
    ],
)
def test_awkward_paths_and_queries_never_500(client, world, django_user_model, path):
    client.raise_request_exception = False
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.test", "x"))

    _check(client.get(path), path)


API_BODIES = [
    None,
    [],
    "x",
    1,
    {"customer": None},
    {"customer": None, "amount": None, "currency": None, "reference": None},
    {"customer": ["C-1"]},
    {"customer": {"id": 1}},
    {"customer": True},
    {"customer": "C-\x00"},
    {"customer": "C-1", "amount": "1\x002"},
    {"customer": "C-1", "reference": "\x00"},
    {"customer": "C-1", "notification_subject": "a\x00"},
    {"customer": "C-1", "notification_body": "a\x00"},
    {"customer": "C-1", "currency": "\x00UR"},
    {"customer": "C-1", "amount": 12.5},
    {"customer": "C-1", "amount": ["12.50"]},
    {"customer": "C-1", "amount": HUGE},
    {"customer": "C-1", "amount": "1e309"},
    {"customer": "C-1", "amount": "-0"},
    {"customer": "C-1", "amount": "0.5", "currency": "jpy"},
    {"customer": "C-1", "notification_body": HUGE},
    {"customer": "id:" + HUGE},
    {"customer": "id:-1"},
    {"customer": HUGE},
    {"\x00": "x", "customer": "C-1"},
    {"customer": "C-1", "extra": {"nested": [None, 1.5e308, -1e999]}},
]


@pytest.mark.parametrize("body", API_BODIES, ids=lambda body: repr(body)[:40])
def test_api_bodies_never_500(client, world, body):
    client.raise_request_exception = False

    response = client.post(
        "/api/v1/charge-issues",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {world['key']}", "Idempotency-Key": "k-1"},
    )

    _check(response, body)


@pytest.mark.parametrize(
    ("raw", "headers"),
    [
        (b'{"customer": "C-1"', {}),
        (b'{"customer": "\\ud800"}', {}),
        (b'{"customer": "C-1", "customer": "C-2"}', {}),
        (b"\xff\xfe{\x00}\x00", {}),
        (b"\x00\x00\x00", {}),
        (b"[" * 50_000, {}),
        (b'{"customer": "C-1"}', {"Idempotency-Key": "\x00"}),
        (b'{"customer": "C-1"}', {"Idempotency-Key": "%ff"}),
        (b'{"customer": "C-1"}', {"Authorization": "Bearer \x00"}),
        (b'{"customer": "C-1"}', {"Authorization": "Bearer " + "x" * 10_000}),
        (b'{"customer": "C-1"}', {"Authorization": "Basic %ff"}),
    ],
)
def test_api_raw_bodies_and_headers_never_500(client, world, raw, headers):
    client.raise_request_exception = False
    headers = {"Authorization": f"Bearer {world['key']}", **headers}

    response = client.generic(
        "POST", "/api/v1/charge-issues", raw, content_type="application/json", headers=headers
    )

    _check(response, (raw[:40], headers))


@pytest.mark.parametrize(
    ("path", "json_answer"),
    [
        ("/admin/billing/chargeissue/?state=%00", False),
        ("/admin/cards/customer/?q=a%00b", False),
        ("/register/probe/?lang=%00", False),
        ("/api/v1/charge-issues?x=%00", True),
    ],
)
def test_a_nul_in_the_query_string_is_a_400(client, world, django_user_model, path, json_answer):
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.test", "x"))

    response = client.get(path)

    assert response.status_code == 400
    if json_answer:
        assert response.json()["code"] == "bad_request"
    else:
        assert "<h1>Bad request</h1>" in response.content.decode()


# --- Shapes a fuzzing of the whole site found (issue 17) --------------------------------------
# A CSRF failure on an admin page for a visitor who is not logged in (the admin's error page
# needed a user), a multipart POST to a view that reads request.body (the card-number guard had
# consumed the stream), and a username longer than django-axes' column.

CSRF_SHAPES = {
    # (cookie, body kind): a browser whose cookie expired, one holding another session's
    # token, one sending a broken cookie.
    "no cookie, a form": (None, "form"),
    "another token's cookie, multipart": ("a" * 32, "multipart"),
    "a malformed cookie, a form": ("%ff\x00", "form"),
}


@pytest.fixture
def every_url():
    everything = one_of_everything()
    return everything, [fill(route, everything) for route in routes()]


@pytest.mark.parametrize("who", ["anonymous", "logged in"])
def test_every_url_answers_a_post_that_fails_the_csrf_check_without_a_500(every_url, who):
    everything, urls = every_url
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    if who == "logged in":
        client.force_login(everything["user"])
    answers = {}

    for url in urls:
        for shape, (cookie, kind) in CSRF_SHAPES.items():
            client.cookies.pop(settings.CSRF_COOKIE_NAME, None)
            if cookie is not None:
                client.cookies[settings.CSRF_COOKIE_NAME] = cookie
            data = {"csrfmiddlewaretoken": "b" * 32, "note": "hello"}
            if kind == "multipart":
                data["attachment"] = SimpleUploadedFile("a.txt", b"hello")
                response = client.post(url, data)
            else:
                response = client.post(url, urlencode(data), content_type=FORM)
            answers[(url, shape)] = response.status_code

    assert len(urls) > 100
    assert [key for key, status in answers.items() if status >= 500] == []
    # The admin's own forms answer the 403 page (the visitor's session decides which).
    assert answers[("/admin/login/", "no cookie, a form")] == 403
    assert answers[("/admin/two-factor/verify/", "no cookie, a form")] in (302, 403)


@pytest.mark.parametrize("length", [151, 255, 256, 1_000, 100_000])
def test_a_long_username_at_the_login_form_is_a_form_error(client, length):
    client.raise_request_exception = False

    response = client.post("/admin/login/", {"username": "u" * length, "password": "secret"})

    assert response.status_code == 200
    assert "Ensure this value has at most 150 characters" in response.content.decode()
    assert not AccessAttempt.objects.exists() and not AccessFailureLog.objects.exists()


@pytest.mark.parametrize(
    "post",
    [
        lambda c: c.post(WEBHOOK, {"id": "evt_1", "type": "payment_intent.succeeded"}),
        lambda c: c.post(WEBHOOK, {"id": "evt_1", "file": SimpleUploadedFile("a.json", b"{}")}),
        lambda c: c.post(WEBHOOK, "id=evt_1&type=payment_intent.succeeded", content_type=FORM),
        lambda c: c.post(WEBHOOK, '{"id": "evt_1", "type": "x"}', content_type="text/plain"),
        lambda c: c.generic("POST", WEBHOOK, b'{"id": "evt_1", "type": "x"}', content_type=""),
    ],
    ids=["multipart", "multipart with a file", "form-encoded", "text/plain", "no content type"],
)
@pytest.mark.parametrize("who", ["anonymous", "logged in"])
def test_a_provider_webhook_that_is_not_json_is_a_400_and_stores_nothing(
    client, django_user_model, post, who
):
    client.raise_request_exception = False
    if who == "logged in":
        client.force_login(django_user_model.objects.create_superuser("root", "r@x.test", "x"))

    response = post(client)

    assert response.status_code == 400
    assert response.json()["code"] == "bad_body"
    assert not ProviderEvent.objects.exists()
