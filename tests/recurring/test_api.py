"""Other systems create, read, pause, resume and cancel lines with the space's API keys."""

import json

import pytest

from billing import api_services as billing_api_services
from recurring.models import RecurringEvent, RecurringLine
from spaces.roles import ADMIN
from tests.factories import CustomerFactory, SpaceFactory, StaffUserFactory
from tests.recurring.conftest import SEED_KEY, soon

pytestmark = pytest.mark.django_db
URL = "/api/v1/recurring-lines"


@pytest.fixture
def api_key(space, space_admin):
    return billing_api_services.api_key_create(
        space=space, name="Shop ERP", acting_user=space_admin
    )


def _post(client, url, body, key, **headers):
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return client.post(url, data=json.dumps(body), content_type="application/json", headers=headers)


def _body(**overrides):
    return {
        "customer": "0283759",
        "amount": "49.90",
        "charge_date": soon(5).isoformat(),
        "card_lookup_key": SEED_KEY,
        "description": "Coffee",
        **overrides,
    }


def test_create_read_pause_resume_cancel(client, api_key, seed_customer, seed_card):
    _, key = api_key
    created = _post(client, URL, _body(), key)
    assert created.status_code == 201, created.json()
    data = created.json()
    assert (data["status"], data["amount_minor"], data["currency"]) == ("active", 4990, "EUR")
    assert data["card_lookup_key"] == SEED_KEY and data["card"] is None
    line = RecurringLine.objects.get()
    event = RecurringEvent.objects.get(line=line)
    assert event.actor is None and event.detail["api_key"] == "Shop ERP"

    auth = {"Authorization": f"Bearer {key}"}
    read = client.get(f"{URL}/{data['id']}", headers=auth)
    assert read.status_code == 200 and read.json()["id"] == data["id"]

    assert _post(client, f"{URL}/{data['id']}/pause", {}, key).json()["status"] == "paused"
    assert _post(client, f"{URL}/{data['id']}/pause", {}, key).status_code == 409
    assert _post(client, f"{URL}/{data['id']}/resume", {}, key).json()["status"] == "active"
    assert _post(client, f"{URL}/{data['id']}/cancel", {}, key).json()["status"] == "cancelled"
    line.refresh_from_db()
    assert line.status == "cancelled"
    actions = list(RecurringEvent.objects.filter(line=line).values_list("action", flat=True))
    assert actions == ["created", "paused", "resumed", "cancelled"]


def test_the_same_idempotency_key_creates_one_line(client, api_key, seed_customer):
    _, key = api_key
    first = _post(client, URL, _body(), key, **{"Idempotency-Key": "line-1"})
    again = _post(client, URL, _body(), key, **{"Idempotency-Key": "line-1"})
    other = _post(client, URL, _body(amount="1.00"), key, **{"Idempotency-Key": "line-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert RecurringLine.objects.count() == 1


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"amount": "0.10"}, "amount"),
        ({"amount": 49.9}, "amount"),
        ({"charge_date": "tomorrow"}, "charge_date"),
        ({"charge_date": "2001-01-01"}, "charge_date"),
        ({"interval": "daily"}, "interval"),
        ({"interval": "cron", "cron": "99 * *"}, "cron"),
        ({"card_lookup_key": "visa"}, "card_lookup_key"),
        ({"currency": "XXX"}, "currency"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_400_with_field_errors_and_creates_nothing(
    client, api_key, seed_customer, overrides, field
):
    response = _post(client, URL, _body(**overrides), api_key[1])
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid" and field in response.json()["fields"]
    assert not RecurringLine.objects.exists()


def test_keys_see_only_their_spaces_customers_and_lines(client, api_key, seed_customer):
    _, key = api_key
    stranger = CustomerFactory(space=SpaceFactory(), external_number="0999999")
    response = _post(client, URL, _body(customer=stranger.external_number), key)
    assert response.status_code == 404 and response.json()["code"] == "customer_not_found"
    line_id = _post(client, URL, _body(), key).json()["id"]
    other_key = billing_api_services.api_key_create(
        space=stranger.space,
        name="Other",
        acting_user=StaffUserFactory(role=ADMIN, spaces=[stranger.space]),
    )[1]
    assert (
        client.get(f"{URL}/{line_id}", headers={"Authorization": f"Bearer {other_key}"}).status_code
        == 404
    )
    assert (
        client.get(f"{URL}/not-a-uuid", headers={"Authorization": f"Bearer {key}"}).status_code
        == 404
    )


def test_without_a_key_or_with_the_wrong_method(client, api_key):
    assert _post(client, URL, _body(), None).status_code == 401
    assert client.get(URL, headers={"Authorization": f"Bearer {api_key[1]}"}).status_code == 405
