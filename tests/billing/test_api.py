"""POST /api/v1/charge-issues: keys, validation, idempotency, and the API key admin."""

import json
import re
import threading
import time

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

# Registers the ApiKey admin before the URLconf is built (billing/admin.py imports it as well).
import billing.admin_keys  # noqa: F401
from billing import api, api_services
from billing.exceptions import NotAllowed
from billing.models import ApiIdempotencyRecord, ApiKey, ChargeIssue, ChargeIssueEvent
from cards.models import Customer, PaymentCard
from spaces.roles import ADMIN, CLERK
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

URL = "/api/v1/charge-issues"
KEY_IN_TEXT = re.compile(r"bo_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def key_admin(space):
    return StaffUserFactory(username="keyadmin", role=ADMIN, spaces=[space])


@pytest.fixture
def api_key(space, key_admin):
    """(ApiKey, the full key as the other system holds it)."""
    return api_services.api_key_create(space=space, name="Shop ERP", acting_user=key_admin)


@pytest.fixture
def customer(space):
    customer = CustomerFactory(
        space=space, name="Kim Kunde", email="kim@example.test", external_number="C-1001"
    )
    PaymentCardFactory(customer=customer, last4="1881")
    return customer


def _post(client, body, key, *, idempotency_key=None, raw=None):
    # Content-Type as a header too: the test client leaves it out when the body is empty.
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    data = raw if raw is not None else json.dumps(body)
    return client.post(URL, data=data, content_type="application/json", headers=headers)


# --- Success ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_start_answers_201_and_the_issue_awaits_amount_entry_with_the_proposal(
    client, space, api_key, customer
):
    key, full_key = api_key
    response = _post(
        client,
        {
            "customer": "C-1001",
            "amount": "12.34",
            "notification_subject": "Your order",
            "notification_body": "We charge your card on file.",
            "reference": "SO-77",
        },
        full_key,
    )

    assert response.status_code == 201, response.json()
    issue = ChargeIssue.objects.get()
    assert response.json() == {
        "id": issue.pk,
        "state": "awaiting_amount",
        "customer": "C-1001",
        "amount_minor": 1234,
        "refunded_minor": 0,
        "currency": "EUR",
        "reference": "SO-77",
        "admin_url": f"http://testserver/admin/billing/chargeissue/{issue.pk}/change/",
    }
    # The amount is only proposed: a clerk still does 1. charge amount entry, someone approves.
    assert issue.state == ChargeIssue.State.AWAITING_AMOUNT
    assert issue.entered_by is None and issue.approved_by is None
    assert issue.source == ChargeIssue.Source.API
    assert (issue.amount_minor, issue.currency, issue.external_reference) == (1234, "EUR", "SO-77")
    assert (issue.notification_subject, issue.notification_body) == (
        "Your order",
        "We charge your card on file.",
    )
    assert (issue.customer_name, issue.customer_email, issue.card_last4) == (
        "Kim Kunde",
        "kim@example.test",
        "1881",
    )
    (event,) = ChargeIssueEvent.objects.filter(issue=issue)
    assert event.action == "started" and event.actor is None
    assert event.detail == {
        "source": "api",
        "api_key": "Shop ERP",
        "api_key_prefix": key.prefix,
        "proposed_amount_minor": 1234,
    }


@pytest.mark.django_db
def test_customer_by_our_id_without_amount_in_another_currency(client, space, api_key, customer):
    customer.external_number = ""
    customer.save()

    response = _post(client, {"customer": f"id:{customer.pk}", "currency": "jpy"}, api_key[1])

    assert response.status_code == 201
    body = response.json()
    assert (body["customer"], body["amount_minor"], body["currency"]) == (
        f"id:{customer.pk}",
        None,
        "JPY",
    )
    issue = ChargeIssue.objects.get()
    assert issue.amount_minor is None and issue.currency == "JPY"


# --- Idempotency ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_repeat_with_the_same_idempotency_key_replays_the_first_answer(client, api_key, customer):
    first = _post(
        client, {"customer": "C-1001", "amount": "5.00"}, api_key[1], idempotency_key="order-77"
    )
    # Same request, other key order and spacing: still the same request.
    again = _post(
        client,
        None,
        api_key[1],
        idempotency_key="order-77",
        raw='{ "amount": "5.00",  "customer": "C-1001" }',
    )

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert ChargeIssue.objects.count() == 1
    record = ApiIdempotencyRecord.objects.get()
    assert (record.key, record.response_status, record.response_body) == (
        "order-77",
        201,
        first.json(),
    )


@pytest.mark.django_db
def test_the_same_idempotency_key_with_another_body_is_refused(client, api_key, customer):
    _post(client, {"customer": "C-1001", "amount": "5.00"}, api_key[1], idempotency_key="k1")

    reused = _post(
        client, {"customer": "C-1001", "amount": "6.00"}, api_key[1], idempotency_key="k1"
    )

    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"
    assert ChargeIssue.objects.count() == 1


@pytest.mark.django_db
def test_idempotency_keys_belong_to_one_api_key(client, space, key_admin, api_key, customer):
    _, other_full_key = api_services.api_key_create(space=space, name="Shop", acting_user=key_admin)

    first = _post(client, {"customer": "C-1001"}, api_key[1], idempotency_key="k1")
    second = _post(client, {"customer": "C-1001"}, other_full_key, idempotency_key="k1")

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]


@pytest.mark.django_db
def test_refusals_are_not_stored_so_the_client_can_fix_and_retry_under_the_same_key(
    client, space, api_key
):
    no_such = _post(client, {"customer": "C-2002"}, api_key[1], idempotency_key="k2")
    customer = CustomerFactory(space=space, external_number="C-2002")
    no_card = _post(client, {"customer": "C-2002"}, api_key[1], idempotency_key="k2")
    PaymentCardFactory(customer=customer)
    started = _post(client, {"customer": "C-2002"}, api_key[1], idempotency_key="k2")

    assert (no_such.status_code, no_card.status_code, started.status_code) == (404, 409, 201)
    assert not started.has_header("Idempotent-Replayed")
    assert ChargeIssue.objects.count() == 1 and ApiIdempotencyRecord.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("idempotency_key", ["", "x" * 256, "tab\there"])
def test_a_bad_idempotency_key_is_refused(client, api_key, customer, idempotency_key):
    response = _post(client, {"customer": "C-1001"}, api_key[1], idempotency_key=idempotency_key)

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["Idempotency-Key"]
    assert not ChargeIssue.objects.exists()


def _blocked_count(pids) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM unnest(%s::int[]) AS p"
            " WHERE cardinality(pg_blocking_pids(p)) > 0",
            [pids],
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_with_one_idempotency_key_start_one_issue():
    space = SpaceFactory(slug="race")
    admin_user = StaffUserFactory(role=ADMIN, spaces=[space])
    _, full_key = api_services.api_key_create(space=space, name="ERP", acting_user=admin_user)
    customer = CustomerFactory(space=space, external_number="C-1001")
    PaymentCardFactory(customer=customer)
    pids, responses, errors = [], [], []
    all_connected = threading.Barrier(3)

    def send():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            all_connected.wait()
            responses.append(
                _post(Client(), {"customer": "C-1001"}, full_key, idempotency_key="order-9")
            )
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    # Holding the customer row makes the race certain rather than likely: the first request
    # cannot commit (its issue's foreign key check waits on the row), so its claim of the key
    # stays uncommitted and the second request is past the lookup and waits on that claim.
    with transaction.atomic():
        Customer.objects.select_for_update().get(pk=customer.pk)
        for thread in threads:
            thread.start()
        all_connected.wait()
        deadline = time.monotonic() + 30
        while _blocked_count(pids) < 2:
            assert time.monotonic() < deadline, "the two requests never both waited"
            time.sleep(0.05)
    for thread in threads:
        thread.join()

    assert errors == []
    assert [r.status_code for r in responses] == [201, 201]
    assert responses[0].json() == responses[1].json()
    assert sorted(r.has_header("Idempotent-Replayed") for r in responses) == [False, True]
    assert ChargeIssue.objects.count() == 1 and ApiIdempotencyRecord.objects.count() == 1


# --- Authentication ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_missing_wrong_and_revoked_keys_are_refused(client, key_admin, api_key, customer):
    key, full_key = api_key
    wrong_secret = full_key[:-4] + ("AAAA" if not full_key.endswith("AAAA") else "BBBB")
    unknown_prefix = "bo_ZZZZZZZZ" + full_key[11:]
    answers = [
        _post(client, {"customer": "C-1001"}, None),
        client.post(
            URL,
            data={"customer": "C-1001"},
            content_type="application/json",
            headers={"Authorization": "Basic dXNlcjpwYXNz"},
        ),
        _post(client, {"customer": "C-1001"}, "not-a-key"),
        _post(client, {"customer": "C-1001"}, wrong_secret),
        _post(client, {"customer": "C-1001"}, unknown_prefix),
    ]
    api_services.api_key_revoke(api_key=key, acting_user=key_admin)
    answers.append(_post(client, {"customer": "C-1001"}, full_key))

    for answer in answers:
        assert answer.status_code == 401
        assert answer.json()["code"] == "unauthorized" and answer.json()["error"]
        assert answer["WWW-Authenticate"].startswith("Bearer")
    assert "revoked" in answers[-1].json()["error"]
    assert not ChargeIssue.objects.exists()


@pytest.mark.django_db
def test_only_key_admins_of_the_space_create_and_revoke_keys(space, api_key):
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    stranger = StaffUserFactory(role=ADMIN, spaces=[SpaceFactory()])

    with pytest.raises(NotAllowed):
        api_services.api_key_create(space=space, name="x", acting_user=clerk)
    with pytest.raises(NotAllowed):
        api_services.api_key_create(space=space, name="x", acting_user=stranger)
    with pytest.raises(NotAllowed):
        api_services.api_key_revoke(api_key=api_key[0], acting_user=stranger)
    assert ApiKey.objects.count() == 1 and ApiKey.objects.get().revoked_at is None


@pytest.mark.django_db
def test_a_key_is_stored_only_as_its_hash(api_key):
    key, full_key = api_key

    assert KEY_IN_TEXT.fullmatch(full_key) and full_key.startswith(f"bo_{key.prefix}_")
    assert key.key_hash == ApiKey.hash(full_key) and full_key[12:] not in key.key_hash


# --- Bad requests -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "code", "fields"),
    [
        ("customer=C-1001", "invalid_json", None),
        ("", "invalid_json", None),
        ('["C-1001"]', "invalid_json", None),
        ('"C-1001"', "invalid_json", None),
        ("[" * 100_000, "invalid_json", None),
        ('{"customer": "\\ud800"}', "invalid_json", None),
        ("{}", "invalid", {"customer"}),
        ('{"customer": ""}', "invalid", {"customer"}),
        ('{"customer": 1001}', "invalid", {"customer"}),
        ('{"customer": "C-\\u0000"}', "invalid", {"customer"}),
        ('{"customer": "C-1001", "currency": "XYZ"}', "invalid", {"currency"}),
        ('{"customer": "C-1001", "currency": "EURO"}', "invalid", {"currency"}),
        ('{"customer": "C-1001", "amount": "12.345"}', "invalid", {"amount"}),
        ('{"customer": "C-1001", "amount": "-5"}', "invalid", {"amount"}),
        ('{"customer": "C-1001", "amount": "0"}', "invalid", {"amount"}),
        ('{"customer": "C-1001", "amount": "0.00"}', "invalid", {"amount"}),
        ('{"customer": "C-1001", "amount": "10000.01"}', "invalid", {"amount"}),
        ('{"customer": "C-1001", "amount": "1e999999999"}', "invalid", {"amount"}),
        ('{"customer": "C-1001", "amount": "NaN"}', "invalid", {"amount"}),
        ('{"customer": "C-1001", "amount": 12.34}', "invalid", {"amount"}),
        ('{"customer": "C-1001", "amount": "12.5", "currency": "JPY"}', "invalid", {"amount"}),
        ('{"customer": "C-1001", "reference": "' + "r" * 101 + '"}', "invalid", {"reference"}),
        (
            '{"customer": "C-1001", "notification_subject": "' + "s" * 201 + '"}',
            "invalid",
            {"notification_subject"},
        ),
        ('{"customer": "C-1001", "ammount": "5.00"}', "invalid", {"ammount"}),
        (
            '{"reference": "' + "r" * 101 + '", "amount": "-1"}',
            "invalid",
            {"customer", "reference", "amount"},
        ),
    ],
)
def test_bad_bodies_are_refused_with_reasons_and_start_nothing(
    client, api_key, customer, raw, code, fields
):
    response = _post(client, None, api_key[1], raw=raw)

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == code and body["error"]
    if fields is not None:
        assert set(body["fields"]) == fields
        assert all(messages and all(messages) for messages in body["fields"].values())
    assert not ChargeIssue.objects.exists()


@pytest.mark.django_db
def test_amount_messages_say_what_is_wrong(client, api_key, customer):
    def amount_error(amount):
        response = _post(client, {"customer": "C-1001", "amount": amount}, api_key[1])
        return response.json()["fields"]["amount"][0]

    assert amount_error("12.345") == "EUR amounts have at most 2 decimal places."
    assert amount_error("0") == "The amount must be more than zero."
    assert amount_error("10000.01") == (
        "The amount is above this space's maximum of 10,000.00 EUR."
    )
    assert amount_error("twelve") == "Enter the amount as a number, e.g. 12.50."


@pytest.mark.django_db
@pytest.mark.parametrize(
    "identifier", ["C-9999", "id:0", "id:abc", "id:" + "9" * 25, "id:", "other-space"]
)
def test_unknown_customers_and_other_spaces_customers_are_not_found(
    client, api_key, customer, identifier
):
    other = CustomerFactory(space=SpaceFactory(slug="other"), external_number="C-1001")
    PaymentCardFactory(customer=other)
    if identifier == "other-space":
        identifier = f"id:{other.pk}"

    response = _post(client, {"customer": identifier}, api_key[1])

    assert response.status_code == 404
    assert response.json()["code"] == "customer_not_found"
    assert not ChargeIssue.objects.exists()


@pytest.mark.django_db
def test_a_customer_without_an_active_card_is_a_conflict(client, space, api_key):
    CustomerFactory(space=space, external_number="C-3003")
    expired = CustomerFactory(space=space, external_number="C-3004")
    PaymentCardFactory(customer=expired, status=PaymentCard.Status.EXPIRED)

    answers = [_post(client, {"customer": number}, api_key[1]) for number in ("C-3003", "C-3004")]

    for answer in answers:
        assert answer.status_code == 409
        assert answer.json() == {
            "error": "This customer has no active card on file.",
            "code": "no_card",
        }
    assert not ChargeIssue.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch", "delete", "head", "options"])
def test_only_post_and_get_are_allowed(client, api_key, method):
    # GET lists the issues (tests/billing/test_api_read.py).
    response = getattr(client, method)(URL, headers={"Authorization": f"Bearer {api_key[1]}"})

    assert response.status_code == 405 and response["Allow"] == "GET, POST"
    if method != "head":
        assert response.json()["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_a_client_stuck_in_a_loop_is_slowed_down(client, api_key, customer, monkeypatch):
    monkeypatch.setattr(api, "RATE_LIMIT", 2)

    answers = [_post(client, {"customer": "C-1001"}, api_key[1]) for _ in range(3)]

    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].json()["code"] == "rate_limited" and int(answers[2]["Retry-After"]) > 0
    assert ChargeIssue.objects.count() == 2


def test_the_url_has_its_name():
    assert reverse("billing_api:charge_issue_create") == URL


# --- The API key admin ------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_adds_a_key_that_is_shown_once_and_works(client, space, key_admin, customer):
    client.force_login(key_admin)

    added = client.post(
        reverse("admin:billing_apikey_add"), {"space": space.pk, "name": "Shop ERP"}, follow=True
    )

    shown = [str(m) for m in added.context["messages"]]
    (full_key,) = {k for m in shown for k in KEY_IN_TEXT.findall(m)}
    assert any("Copy it now, it is not shown again" in m for m in shown)
    key = ApiKey.objects.get()
    assert (key.space, key.name, key.created_by) == (space, "Shop ERP", key_admin)
    assert key.key_hash == ApiKey.hash(full_key)
    assert _post(Client(), {"customer": "C-1001"}, full_key).status_code == 201

    listing = client.get(reverse("admin:billing_apikey_changelist")).content.decode()
    page = client.get(reverse("admin:billing_apikey_change", args=[key.pk])).content.decode()
    assert key.prefix in listing and key.prefix in page
    assert full_key not in listing and full_key not in page and key.key_hash not in page


@pytest.mark.django_db
def test_a_key_cannot_be_changed_or_deleted_in_the_admin(client, key_admin, api_key):
    key, _ = api_key
    client.force_login(key_admin)
    before = (key.name, key.prefix, key.key_hash)

    change = client.post(
        reverse("admin:billing_apikey_change", args=[key.pk]), {"name": "x", "prefix": "AAAAAAAA"}
    )
    delete = client.post(reverse("admin:billing_apikey_delete", args=[key.pk]), {"post": "yes"})

    assert change.status_code == 403 and delete.status_code == 403
    key.refresh_from_db()
    assert (key.name, key.prefix, key.key_hash) == before


@pytest.mark.django_db
def test_admin_revokes_keys_and_they_stop_working(client, key_admin, api_key, customer):
    key, full_key = api_key
    client.force_login(key_admin)

    response = client.post(
        reverse("admin:billing_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [key.pk]},
        follow=True,
    )

    assert "1 key(s) revoked" in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert _post(Client(), {"customer": "C-1001"}, full_key).status_code == 401


@pytest.mark.django_db
def test_admins_see_only_their_spaces_keys(client, api_key):
    other_space_admin = StaffUserFactory(role=ADMIN, spaces=[SpaceFactory(slug="elsewhere")])
    client.force_login(other_space_admin)

    listing = client.get(reverse("admin:billing_apikey_changelist"))

    assert listing.status_code == 200 and list(listing.context["cl"].result_list) == []


# --- Media type, size and amounts -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (None, b'{"customer": "C-1001"}'),
        ("text/plain", b'{"customer": "C-1001"}'),
        ("application/x-www-form-urlencoded", b"customer=C-1001"),
        (
            "multipart/form-data; boundary=xx",
            b'--xx\r\nContent-Disposition: form-data; name="customer"\r\n\r\nC-1001\r\n--xx--\r\n',
        ),  # noqa: E501
        ("application/json; charset=latin-1", b'{"customer": "C-1001"}'),
        ("application/jsonp", b'{"customer": "C-1001"}'),
    ],
)
def test_a_body_that_is_not_json_is_415(client, api_key, customer, content_type, body):
    headers = {"Authorization": f"Bearer {api_key[1]}"}
    meta = {"CONTENT_TYPE": content_type} if content_type else {}

    response = client.generic("POST", URL, body, headers=headers, **meta)

    assert response.status_code == 415, response.content
    assert response.json() == {
        "error": "Send the body as JSON in UTF-8, with Content-Type: application/json.",
        "code": "unsupported_media_type",
    }
    assert not ChargeIssue.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON; charset=UTF-8"]
)
def test_json_with_a_utf8_charset_is_accepted(client, api_key, customer, content_type):
    response = client.post(
        URL,
        data=json.dumps({"customer": "C-1001"}),
        content_type=content_type,
        headers={"Authorization": f"Bearer {api_key[1]}"},
    )

    assert response.status_code == 201, response.content
    assert ChargeIssue.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("size", [api.MAX_BODY_BYTES + 1, 3 * 1024 * 1024])
def test_a_body_over_the_limit_is_a_json_413(client, api_key, customer, size):
    padding = "x" * (size - len('{"customer": "C-1001", "notification_body": ""}'))
    raw = json.dumps({"customer": "C-1001", "notification_body": padding})
    assert len(raw) == size

    response = _post(client, None, api_key[1], raw=raw)

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "payload_too_large" and response.json()["error"]
    assert not ChargeIssue.objects.exists()


@pytest.mark.django_db
def test_a_body_at_the_limit_is_read(client, api_key, customer):
    padding = "x" * (api.MAX_BODY_BYTES - len('{"customer": "C-1001", "notification_body": ""}'))
    raw = json.dumps({"customer": "C-1001", "notification_body": padding})

    response = _post(client, None, api_key[1], raw=raw)

    assert response.status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("0.49", "EUR", "smallest charge our payment provider accepts in EUR: 0.50 EUR."),
        ("0.49", "USD", "smallest charge our payment provider accepts in USD: 0.50 USD."),
        ("49", "JPY", "smallest charge our payment provider accepts in JPY: 50 JPY."),
        ("0.29", "GBP", "smallest charge our payment provider accepts in GBP: 0.30 GBP."),
        (" 12.50", "EUR", "Enter the amount without spaces around it, e.g. 12.50."),
        ("12.50 ", "EUR", "Enter the amount without spaces around it, e.g. 12.50."),
        ("１２.５０", "EUR", "Enter the amount as a number, e.g. 12.50."),
        ("١٢.٥٠", "EUR", "Enter the amount as a number, e.g. 12.50."),
    ],
)
def test_amounts_below_the_minimum_or_not_plain_ascii_are_refused(
    client, api_key, customer, amount, currency, message
):
    response = _post(
        client, {"customer": "C-1001", "amount": amount, "currency": currency}, api_key[1]
    )

    assert response.status_code == 400
    assert response.json()["fields"]["amount"] == [
        message if message.startswith("Enter") else f"The amount is below the {message}"
    ]
    assert not ChargeIssue.objects.exists()


@pytest.mark.django_db
def test_the_minimum_itself_is_accepted(client, api_key, customer):
    response = _post(client, {"customer": "C-1001", "amount": "0.50"}, api_key[1])

    assert response.status_code == 201 and response.json()["amount_minor"] == 50
