"""Audit of configuration (issue 12, §7): every change to spaces, charge limits, customers,
API keys, charge flows (levels, conditions) and recurring lines leaves a history row with the
user and each field's old and new value, in the same transaction, shown on the admin's
History page; services that change rows with a queryset UPDATE write it too."""

from datetime import date, timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse

from billing import api_services
from cards import services as card_services
from cards.models import Customer
from chargeflows import services as flow_services
from chargeflows.models import ChargeFlow, ChargeFlowCondition, ChargeFlowLevelConfiguration
from recurring import services as recurring_services
from recurring.models import RecurringLine
from spaces.models import Space
from spaces.roles import ADMIN, CLERK
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db


class Rollback(Exception):
    pass


@pytest.fixture
def space():
    return SpaceFactory(name="Shop", slug="shop")


@pytest.fixture
def admin_user(space):
    return StaffUserFactory(username="cfgadmin", role=ADMIN, spaces=[space])


@pytest.fixture
def admin_client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def latest(obj):
    return obj.history.order_by("-history_id").first()


def changed_fields(record):
    previous = record.prev_record
    return {c.field: (c.old, c.new) for c in record.diff_against(previous).changes}


def change_form_data(client, url) -> dict:
    """What the admin's change form would post unchanged: its fields and each inline's
    management form (the inlines' rows left out)."""
    response = client.get(url)
    assert response.status_code == 200
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None or value is False:
            continue
        data[name] = "on" if value is True else value
    for inline in response.context["inline_admin_formsets"]:
        prefix = inline.formset.prefix
        data[f"{prefix}-TOTAL_FORMS"] = "0"
        data[f"{prefix}-INITIAL_FORMS"] = "0"
    return data


def history_page(client, obj):
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_history", args=[obj.pk])
    return client.get(url)


# --- Spaces and their charge limits (admin) ---------------------------------------------------


def _space_post(space, **changes):
    data = {
        "name": space.name,
        "slug": space.slug,
        "default_currency": space.default_currency,
        "public_card_registration": "on",
        "max_charge_minor": space.max_charge_minor,
        "webhook_url": "",
        "card_expiry_warning_days": "",
        "refund_threshold_minor": "0",
        "notification_texts": "{}",
        "charge_limits-TOTAL_FORMS": "0",
        "charge_limits-INITIAL_FORMS": "0",
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return data


def test_a_space_edited_in_the_admin_records_old_and_new_value_and_the_user(
    space, admin_user, admin_client
):
    url = reverse("admin:spaces_space_change", args=[space.pk])
    response = admin_client.post(
        url,
        _space_post(
            space,
            max_charge_minor="50000",
            **{
                "charge_limits-TOTAL_FORMS": "1",
                "charge_limits-0-currency": "JPY",
                "charge_limits-0-max_charge_minor": "900000",
            },
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]

    record = latest(Space.objects.get(pk=space.pk))
    assert record.history_user == admin_user
    assert changed_fields(record) == {"max_charge_minor": (1_000_000, 50000)}
    limit = space.charge_limits.get()
    assert latest(limit).history_type == "+"
    assert latest(limit).history_user == admin_user
    # The signing secret never reaches the history table.
    assert not hasattr(record, "webhook_secret")

    page = history_page(admin_client, space)
    assert page.status_code == 200
    text = page.content.decode()
    assert "1000000" in text and "50000" in text and "cfgadmin" in text


def test_a_space_change_rolled_back_leaves_no_history(space):
    before = space.history.count()
    with pytest.raises(Rollback), transaction.atomic():
        space.name = "Renamed"
        space.save()
        assert space.history.count() == before + 1  # written in the same transaction
        raise Rollback
    assert space.history.count() == before


def test_the_history_page_of_another_spaces_object_is_a_404(space, admin_client):
    other = SpaceFactory(name="Other", slug="other")
    customer = CustomerFactory(space=other)
    flow = ChargeFlow.objects.get(space=other)
    for obj in (other, customer, flow):
        assert history_page(admin_client, obj).status_code == 404
    assert history_page(admin_client, space).status_code == 200


# --- Customers --------------------------------------------------------------------------------


def test_a_customer_edit_records_old_and_new_email_and_the_user(space, admin_user, admin_client):
    customer = CustomerFactory(space=space, email="old@example.test")
    customer.email = "new@example.test"
    card_services.customer_update(customer=customer, acting_user=admin_user)

    record = latest(customer)
    assert record.history_user == admin_user
    assert changed_fields(record)["email"] == ("old@example.test", "new@example.test")
    text = history_page(admin_client, customer).content.decode()
    assert "old@example.test" in text and "new@example.test" in text


def test_a_customer_edit_in_the_admin_names_the_staff_user(space, admin_user, admin_client):
    customer = CustomerFactory(space=space, name="Erika Muster", email="erika@example.test")
    url = reverse("admin:cards_customer_change", args=[customer.pk])
    data = change_form_data(admin_client, url)
    data["name"] = "Erika Mustermann"
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    record = latest(customer)
    assert record.history_user == admin_user
    assert changed_fields(record)["name"] == ("Erika Muster", "Erika Mustermann")


def test_a_customer_edit_rolled_back_leaves_no_history(space, admin_user):
    customer = CustomerFactory(space=space)
    before = customer.history.count()
    with pytest.raises(Rollback), transaction.atomic():
        customer.name = "Changed"
        card_services.customer_update(customer=customer, acting_user=admin_user)
        raise Rollback
    assert Customer.history.filter(id=customer.pk).count() == before


# --- API keys ---------------------------------------------------------------------------------


def test_an_api_key_created_and_revoked_records_the_user_and_no_hash(
    space, admin_user, admin_client
):
    api_key, _ = api_services.api_key_create(space=space, name="ERP", acting_user=admin_user)
    api_services.api_key_revoke(api_key=api_key, acting_user=admin_user)

    created, revoked = api_key.history.order_by("history_id")
    assert (created.history_type, created.history_user) == ("+", admin_user)
    assert revoked.history_user == admin_user
    assert changed_fields(revoked)["revoked_at"][0] is None
    assert not hasattr(revoked, "key_hash")
    assert history_page(admin_client, api_key).status_code == 200


# --- Charge flows: optimistic-locking UPDATEs, conditions, levels -----------------------------


def test_a_versioned_flow_update_writes_history_with_old_and_new_and_the_user(
    space, admin_user, admin_client
):
    flow = ChargeFlow.objects.get(space=space)
    old_name = flow.name
    flow_services.charge_flow_update(
        flow=flow, expected_version=flow.version, acting_user=admin_user, name="Gentle"
    )

    record = latest(flow)
    assert record.history_user == admin_user
    fields = changed_fields(record)
    assert fields["name"] == (old_name, "Gentle")
    assert (record.prev_record.version, record.version) == (1, 2)
    text = history_page(admin_client, flow).content.decode()
    assert old_name in text and "Gentle" in text


def test_a_refused_stale_flow_update_writes_no_history(space, admin_user):
    flow = ChargeFlow.objects.get(space=space)
    before = flow.history.count()
    with pytest.raises(flow_services.StaleEdit):
        flow_services.charge_flow_update(
            flow=flow, expected_version=flow.version + 5, acting_user=admin_user, name="X"
        )
    assert flow.history.count() == before


def test_a_versioned_update_rolled_back_leaves_no_history(space, admin_user):
    flow = ChargeFlow.objects.get(space=space)
    before = flow.history.count()
    with pytest.raises(Rollback), transaction.atomic():
        flow_services.charge_flow_update(
            flow=flow, expected_version=flow.version, acting_user=admin_user, priority=5
        )
        raise Rollback
    assert flow.history.count() == before


def test_conditions_replaced_record_the_removed_and_added_rows_with_the_user(space, admin_user):
    flow = ChargeFlow.objects.get(space=space)
    flow = flow_services.charge_flow_conditions_set(
        flow=flow,
        conditions=[{"kind": "currency", "value": "EUR"}],
        expected_version=flow.version,
        acting_user=admin_user,
    )
    old = flow.conditions.get()
    flow_services.charge_flow_conditions_set(
        flow=flow,
        conditions=[{"kind": "currency", "value": "USD"}],
        expected_version=flow.version,
        acting_user=admin_user,
    )
    rows = ChargeFlowCondition.history.filter(flow_id=flow.pk).order_by("history_id")
    assert [(r.history_type, r.value, r.history_user) for r in rows] == [
        ("+", "EUR", admin_user),
        ("-", "EUR", admin_user),
        ("+", "USD", admin_user),
    ]
    assert rows[1].id == old.pk


def test_a_level_edit_records_old_and_new_period_and_the_user(space, admin_user, admin_client):
    level = ChargeFlowLevelConfiguration.objects.filter(flow__space=space).order_by("pk").last()
    old_period = level.period
    flow_services.level_configuration_update(
        configuration=level,
        expected_version=level.version,
        acting_user=admin_user,
        name="Final notice",
    )
    record = latest(level)
    assert record.history_user == admin_user
    assert changed_fields(record)["name"][1] == "Final notice"
    assert record.period == old_period
    assert history_page(admin_client, level).status_code == 200


# --- Recurring lines --------------------------------------------------------------------------


@pytest.fixture
def line(space):
    clerk = StaffUserFactory(username="cfgclerk", role=CLERK, spaces=[space])
    customer = CustomerFactory(space=space, external_number="0283759")
    return recurring_services.recurring_line_create(
        customer=customer,
        amount_minor=4990,
        currency="EUR",
        charge_date=date.today() + timedelta(days=10),
        card_lookup_key="0283759-Visa-4242-06/34",
        acting_user=clerk,
    )


def test_a_recurring_line_edit_records_old_and_new_amount_and_the_user(line, space, admin_client):
    editor = StaffUserFactory(username="cfgclerk2", role=ADMIN, spaces=[space])
    recurring_services.recurring_line_edit(line=line, acting_user=editor, amount_minor=5990)
    record = latest(line)
    assert record.history_user == editor
    assert changed_fields(record)["amount_minor"] == (4990, 5990)
    page = history_page(admin_client, line)
    assert page.status_code == 200
    assert "4990" in page.content.decode() and "5990" in page.content.decode()


def test_a_card_filling_lines_by_bulk_update_writes_their_history(line):
    before = line.history.count()
    card = PaymentCardFactory(customer=line.customer, exp_month=6, exp_year=2034)
    assert card.lookup_key == line.card_lookup_key
    RecurringLine.objects.filter(pk=line.pk).update(card=None)  # as if it were still empty

    assert recurring_services.recurring_lines_fill_for_card(card=card) == 1

    record = latest(line)
    assert line.history.count() == before + 1
    assert record.card_id == card.pk
    assert record.history_change_reason == "card filled (card event)"


def test_an_api_change_to_a_line_names_the_api_key(line):
    via = {"api_key": "ERP", "api_key_prefix": "AbCd1234"}
    recurring_services.recurring_line_pause(line=line, via=via)
    record = latest(line)
    assert record.history_user is None
    assert record.history_change_reason == "API key AbCd1234"
    assert changed_fields(record)["status"] == ("active", "paused")
