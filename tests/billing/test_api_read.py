"""GET/cancel/events of /api/v1/charge-issues, one live charge per reference, the schema, the
docs page, and errors in the one shape."""

import json
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.utils import timezone

from billing import api_services, services
from billing.exceptions import ReferenceInUse
from billing.models import ChargeIssue, ChargeIssueEvent
from cards.models import Customer
from spaces.roles import ADMIN, CLERK
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

URL = "/api/v1/charge-issues"


@pytest.fixture
def key_admin(space):
    return StaffUserFactory(username="keyadmin", role=ADMIN, spaces=[space])


@pytest.fixture
def api_key(space, key_admin):
    return api_services.api_key_create(space=space, name="Shop ERP", acting_user=key_admin)


@pytest.fixture
def customer(space):
    customer = CustomerFactory(space=space, external_number="C-1001")
    PaymentCardFactory(customer=customer)
    return customer


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def _start(client, key, **body):
    body.setdefault("customer", "C-1001")
    return client.post(URL, data=json.dumps(body), content_type="application/json",
                       headers=_auth(key))  # fmt: skip


def _staff_issue(customer, **fields):
    return services.charge_issue_start(customer=customer, source=ChargeIssue.Source.STAFF, **fields)


# --- Read one, and the space's boundary -------------------------------------------------------


@pytest.mark.django_db
def test_read_one_answers_what_the_start_answered(client, api_key, customer):
    started = _start(client, api_key[1], reference="SO-1", amount="9.99")

    read = client.get(f"{URL}/{started.json()['id']}", headers=_auth(api_key[1]))

    assert read.status_code == 200 and read.json() == started.json()


@pytest.mark.django_db
def test_read_one_shows_how_much_was_refunded(client, api_key, customer):
    started = _start(client, api_key[1], reference="SO-2", amount="49.90")
    # The refund path itself (provider, four eyes) is tested in test_refunds.py; here only
    # that the read answers the issue's refunded total.
    ChargeIssue.objects.filter(pk=started.json()["id"]).update(
        state=ChargeIssue.State.SUCCEEDED, refunded_minor=1000
    )

    read = client.get(f"{URL}/{started.json()['id']}", headers=_auth(api_key[1]))

    assert started.json()["refunded_minor"] == 0
    assert read.status_code == 200
    assert (read.json()["state"], read.json()["refunded_minor"]) == ("succeeded", 1000)


@pytest.mark.django_db
def test_another_spaces_issue_is_not_found_for_every_operation(client, api_key, customer):
    other_space = SpaceFactory(slug="elsewhere")
    other_customer = CustomerFactory(space=other_space)
    PaymentCardFactory(customer=other_customer)
    theirs = _staff_issue(other_customer)

    answers = [
        client.get(f"{URL}/{theirs.pk}", headers=_auth(api_key[1])),
        client.get(f"{URL}/{theirs.pk}/events", headers=_auth(api_key[1])),
        client.post(f"{URL}/{theirs.pk}/cancel", headers=_auth(api_key[1])),
        client.get(f"{URL}/{theirs.pk + 1000}", headers=_auth(api_key[1])),
    ]

    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert {a.json()["code"] for a in answers} == {"not_found"}
    theirs.refresh_from_db()
    assert theirs.state == ChargeIssue.State.AWAITING_AMOUNT
    listed = client.get(URL, headers=_auth(api_key[1])).json()
    assert listed == {"data": [], "next_cursor": None}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["0", "-1", "abc", "9" * 25, "1.5"])
def test_an_id_that_cannot_be_one_is_a_400_in_the_error_shape(client, api_key, path):
    response = client.get(f"{URL}/{path}", headers=_auth(api_key[1]))

    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and list(response.json()["fields"]) == ["id"]


@pytest.mark.django_db
def test_reads_need_a_key(client, customer):
    issue = _staff_issue(customer)

    for path in (URL, f"{URL}/{issue.pk}", f"{URL}/{issue.pk}/events"):
        response = client.get(path)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert client.post(f"{URL}/{issue.pk}/cancel").status_code == 401


# --- List: filters and cursor -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_list_filters_by_state_customer_reference_and_dates(client, api_key, customer, space):
    other = CustomerFactory(space=space, external_number="C-2002")
    PaymentCardFactory(customer=other)
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    a = _staff_issue(customer, external_reference="A")
    b = _staff_issue(other, external_reference="B")
    c = services.charge_issue_cancel(issue=_staff_issue(customer), acting_user=clerk)
    ChargeIssue.objects.filter(pk=a.pk).update(created_at=timezone.now() - timedelta(days=10))

    def ids(**query):
        response = client.get(URL, query, headers=_auth(api_key[1]))
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["data"]]

    assert ids() == [c.pk, b.pk, a.pk]
    assert ids(state="cancelled") == [c.pk]
    assert ids(state="awaiting_amount") == [b.pk, a.pk]
    assert ids(customer="C-2002") == [b.pk]
    assert ids(customer=f"id:{customer.pk}") == [c.pk, a.pk]
    assert ids(customer="C-9999") == []
    assert ids(reference="A") == [a.pk]
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(created_after=since) == [c.pk, b.pk]
    assert ids(created_before=since) == [a.pk]
    assert ids(created_after=since, state="awaiting_amount", customer="C-2002") == [b.pk]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "lost"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "9999-12-31T23:59:59-23:00"}, "created_before"),
        ({"cursor": "made-up"}, "cursor"),
    ],
)
def test_bad_list_queries_are_a_400_with_the_field(client, api_key, query, field):
    response = client.get(URL, query, headers=_auth(api_key[1]))

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid" and body["error"] and list(body["fields"]) == [field]


@pytest.mark.django_db
def test_cursor_pages_are_stable_while_issues_are_added(client, api_key, customer):
    first_five = [_staff_issue(customer) for _ in range(5)]

    def page(cursor=None):
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = client.get(URL, query, headers=_auth(api_key[1]))
        assert response.status_code == 200
        return [row["id"] for row in response.json()["data"]], response.json()["next_cursor"]

    one, cursor = page()
    added_meanwhile = _staff_issue(customer)
    two, cursor = page(cursor)
    three, cursor = page(cursor)

    newest_first = [issue.pk for issue in reversed(first_five)]
    assert one + two + three == newest_first and cursor is None
    assert added_meanwhile.pk not in one + two + three
    assert page()[0][0] == added_meanwhile.pk


@pytest.mark.django_db
def test_issues_created_in_the_same_instant_are_paged_by_id(client, api_key, customer):
    issues = [_staff_issue(customer) for _ in range(3)]
    ChargeIssue.objects.update(created_at=timezone.now())

    seen, cursor = [], None
    for _ in range(3):
        query = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        body = client.get(URL, query, headers=_auth(api_key[1])).json()
        seen += [row["id"] for row in body["data"]]
        cursor = body["next_cursor"]

    assert seen == sorted((i.pk for i in issues), reverse=True) and cursor is None


# --- Cancel and events ------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_goes_through_the_service_and_is_audited_with_the_key(client, api_key, customer):
    key, full_key = api_key
    issue_id = _start(client, full_key, reference="SO-5").json()["id"]

    response = client.post(f"{URL}/{issue_id}/cancel", headers=_auth(full_key))

    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    issue = ChargeIssue.objects.get(pk=issue_id)
    assert issue.state == ChargeIssue.State.CANCELLED
    event = ChargeIssueEvent.objects.filter(issue=issue).last()
    assert (event.action, event.from_state, event.to_state, event.actor) == (
        "cancelled",
        "awaiting_amount",
        "cancelled",
        None,
    )
    assert event.detail == {"api_key": "Shop ERP", "api_key_prefix": key.prefix}

    again = client.post(f"{URL}/{issue_id}/cancel", headers=_auth(full_key))
    assert again.status_code == 409 and again.json()["code"] == "illegal_transition"
    assert ChargeIssueEvent.objects.filter(issue=issue, action="cancelled").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["charging", "collecting", "succeeded", "failed"])
def test_states_that_cannot_be_cancelled_are_a_409_and_change_nothing(
    client, api_key, customer, state
):
    issue = _staff_issue(customer)
    ChargeIssue.objects.filter(pk=issue.pk).update(state=state)

    response = client.post(f"{URL}/{issue.pk}/cancel", headers=_auth(api_key[1]))

    assert response.status_code == 409 and response.json()["code"] == "illegal_transition"
    assert response.json()["error"]
    issue.refresh_from_db()
    assert issue.state == state
    assert not ChargeIssueEvent.objects.filter(issue=issue, action="cancelled").exists()


@pytest.mark.django_db
def test_events_list_the_audit_trail_oldest_first(client, api_key, customer, space):
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    issue_id = _start(client, api_key[1]).json()["id"]
    services.charge_amount_enter(
        issue=ChargeIssue.objects.get(pk=issue_id),
        acting_user=clerk,
        amount="12.50",
        currency="EUR",
        notification_subject="s",
        notification_body="b",
    )

    response = client.get(f"{URL}/{issue_id}/events", headers=_auth(api_key[1]))

    assert response.status_code == 200
    rows = response.json()["data"]
    assert [(r["action"], r["from_state"], r["to_state"]) for r in rows] == [
        ("started", "", "awaiting_amount"),
        ("amount_entered", "awaiting_amount", "awaiting_approval"),
    ]
    expected_ids = list(
        ChargeIssueEvent.objects.filter(issue_id=issue_id).order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )  # fmt: skip
    assert [r["id"] for r in rows] == expected_ids and all(r["created_at"] for r in rows)


# --- One live charge per reference ------------------------------------------------------------


@pytest.mark.django_db
def test_a_second_start_with_a_live_reference_is_a_409_naming_the_first(
    client, api_key, customer, space
):
    first = _start(client, api_key[1], reference="SO-9")

    second = client.post(
        URL,
        data=json.dumps({"customer": "C-1001", "reference": "SO-9"}),
        content_type="application/json",
        headers={**_auth(api_key[1]), "Idempotency-Key": "another-key"},
    )

    assert first.status_code == 201
    assert second.status_code == 409
    body = second.json()
    assert body["code"] == "reference_in_use" and body["existing_id"] == first.json()["id"]
    assert str(first.json()["id"]) in body["error"]
    assert ChargeIssue.objects.count() == 1
    # Refused, so not stored: the same key may start something else.
    assert (
        client.post(
            URL,
            data=json.dumps({"customer": "C-1001", "reference": "SO-10"}),
            content_type="application/json",
            headers={**_auth(api_key[1]), "Idempotency-Key": "another-key"},
        ).status_code
        == 201
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("state", "refused"),
    [("succeeded", True), ("approved", True), ("cancelled", False), ("failed", False)],
)
def test_live_means_neither_cancelled_nor_failed(client, api_key, customer, state, refused):
    issue = _staff_issue(customer, external_reference="SO-3")
    ChargeIssue.objects.filter(pk=issue.pk).update(state=state)

    response = _start(client, api_key[1], reference="SO-3")

    assert response.status_code == (409 if refused else 201)
    assert ChargeIssue.objects.count() == (1 if refused else 2)


@pytest.mark.django_db
def test_other_spaces_and_empty_references_do_not_conflict(client, api_key, customer):
    elsewhere = CustomerFactory(space=SpaceFactory(slug="other"))
    PaymentCardFactory(customer=elsewhere)
    _staff_issue(elsewhere, external_reference="SO-1")

    answers = [_start(client, api_key[1], reference="SO-1"), _start(client, api_key[1])]
    answers.append(_start(client, api_key[1]))

    assert [a.status_code for a in answers] == [201, 201, 201]


@pytest.mark.django_db
def test_the_database_refuses_a_second_unfinished_issue_with_a_reference(customer):
    first = _staff_issue(customer, external_reference="SO-4")

    with pytest.raises(ReferenceInUse) as refused:
        _staff_issue(customer, external_reference="SO-4")
    with pytest.raises(IntegrityError), transaction.atomic():
        ChargeIssue.objects.create(
            **{
                f.attname: getattr(first, f.attname)
                for f in ChargeIssue._meta.concrete_fields
                if not f.primary_key
            }
        )

    assert refused.value.existing_id == first.pk
    assert ChargeIssue.objects.count() == 1


@pytest.mark.django_db
def test_a_restart_of_a_finished_issue_keeps_its_reference(customer, space):
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    finished = services.charge_issue_cancel(
        issue=_staff_issue(customer, external_reference="SO-6"), acting_user=clerk
    )

    restarted = services.charge_issue_restart(issue=finished, acting_user=clerk)

    assert restarted.external_reference == "SO-6"
    # At once again (a double click): the same new issue, not a second one.
    assert services.charge_issue_restart(issue=finished, acting_user=clerk).pk == restarted.pk
    # Later: a second live issue with that reference is refused.
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        with pytest.raises(ReferenceInUse):
            services.charge_issue_restart(issue=finished, acting_user=clerk)


def _blocked_count(pids) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM unnest(%s::int[]) AS p"
            " WHERE cardinality(pg_blocking_pids(p)) > 0",
            [pids],
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_starts_with_one_reference_start_one_issue():
    space = SpaceFactory(slug="race-ref")
    admin_user = StaffUserFactory(role=ADMIN, spaces=[space])
    _, full_key = api_services.api_key_create(space=space, name="ERP", acting_user=admin_user)
    customer = CustomerFactory(space=space, external_number="C-1001")
    PaymentCardFactory(customer=customer)
    pids, responses, errors = [], [], []
    all_connected = threading.Barrier(3)

    def send(idempotency_key):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            all_connected.wait()
            responses.append(
                Client().post(
                    URL,
                    data=json.dumps({"customer": "C-1001", "reference": "SO-RACE"}),
                    content_type="application/json",
                    headers={**_auth(full_key), "Idempotency-Key": idempotency_key},
                )
            )
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(f"key-{n}",)) for n in range(2)]
    # Holding the customer row keeps both inserts uncommitted until both are past the
    # application's check (which sees nothing yet): only the unique index decides.
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
    assert sorted(r.status_code for r in responses) == [201, 409]
    created = next(r for r in responses if r.status_code == 201).json()
    refused = next(r for r in responses if r.status_code == 409).json()
    assert refused["code"] == "reference_in_use" and refused["existing_id"] == created["id"]
    assert ChargeIssue.objects.count() == 1


# --- Schema and docs --------------------------------------------------------------------------


def test_the_schema_lists_every_operation_with_bearer_auth(client):
    schema = client.get("/api/v1/openapi.json").json()

    assert schema["openapi"].startswith("3.")
    operations = {
        (method, path) for path, item in schema["paths"].items() for method in item
    }  # fmt: skip
    assert operations == {
        ("post", "/api/v1/charge-issues"),
        ("get", "/api/v1/charge-issues"),
        ("get", "/api/v1/charge-issues/{id}"),
        ("post", "/api/v1/charge-issues/{id}/cancel"),
        ("get", "/api/v1/charge-issues/{id}/events"),
        ("post", "/api/v1/recurring-lines"),
        ("get", "/api/v1/recurring-lines/{id}"),
        ("post", "/api/v1/recurring-lines/{id}/pause"),
        ("post", "/api/v1/recurring-lines/{id}/resume"),
        ("post", "/api/v1/recurring-lines/{id}/cancel"),
    }
    assert schema["components"]["securitySchemes"] == {
        "ApiKeyAuth": {"type": "http", "scheme": "bearer"}
    }
    start = schema["paths"]["/api/v1/charge-issues"]["post"]
    assert "customer" in start["requestBody"]["content"]["application/json"]["schema"]["required"]
    assert {"201", "400", "401", "404", "409", "413", "415", "422", "429"} <= set(
        start["responses"]
    )


def test_the_docs_page_loads_only_our_own_files(client):
    response = client.get("/api/v1/docs")

    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200
