"""Issue 7 §3: a space's settings are validated (currency, maximum per currency, webhook URL)
and its webhook signing secret is generated, shown once and rotated with an audit row."""

import importlib

import pytest
from django.apps import apps
from django.contrib.messages import get_messages
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from billing import api_services, services
from billing.exceptions import InvalidAmount
from billing.models import ChargeIssue
from spaces.models import Space, SpaceChargeLimit, SpaceEvent
from spaces.roles import ADMIN, CLERK
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

PUBLIC = "https://93.184.216.34/hooks"  # an IP literal: public, and no DNS needed offline


@pytest.fixture
def space():
    return SpaceFactory(name="Alpha Shop", slug="alpha")


@pytest.fixture
def space_admin(space):
    return StaffUserFactory(username="alpha-admin", role=ADMIN, spaces=[space])


def form(space, *, limits=(), **changes):
    data = {
        "name": space.name,
        "slug": space.slug,
        "default_currency": space.default_currency,
        "max_charge_minor": space.max_charge_minor,
        "refund_threshold_minor": space.refund_threshold_minor,
        "public_card_registration": "on",
        "webhook_url": space.webhook_url,
        "charge_limits-TOTAL_FORMS": len(limits),
        "charge_limits-INITIAL_FORMS": 0,
        "events-TOTAL_FORMS": 0,
        "events-INITIAL_FORMS": 0,
        **changes,
    }
    for i, (currency, maximum) in enumerate(limits):
        data[f"charge_limits-{i}-currency"] = currency
        data[f"charge_limits-{i}-max_charge_minor"] = maximum
    return data


def change(client, space, follow=False, **data):
    url = reverse("admin:spaces_space_change", args=[space.pk])
    return client.post(url, form(space, **data), follow=follow)


def snapshot(space):
    fresh = Space.objects.get(pk=space.pk)
    fields = {f.attname: getattr(fresh, f.attname) for f in Space._meta.concrete_fields}
    return fields, list(fresh.charge_limits.values_list("currency", "max_charge_minor"))


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- Currency and maximum ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"default_currency": "XXX"}, "default_currency"),
        ({"default_currency": "eur"}, "default_currency"),
        ({"default_currency": "BTC"}, "default_currency"),
        ({"max_charge_minor": 0}, "max_charge_minor"),
        ({"max_charge_minor": -100}, "max_charge_minor"),
    ],
)
def test_bad_currency_or_maximum_is_a_form_error_and_changes_nothing(
    client, space, space_admin, changes, field
):
    client.force_login(space_admin)
    before = snapshot(space)

    response = change(client, space, **changes)

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert snapshot(space) == before


@pytest.mark.parametrize("limits", [[("JPY", 0)], [("XXX", 5000)], [("JPY", 1), ("JPY", 2)]])
def test_bad_maximum_per_currency_is_refused(client, space, space_admin, limits):
    client.force_login(space_admin)
    before = snapshot(space)

    response = change(client, space, limits=limits)

    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.errors or formset.non_form_errors()
    assert snapshot(space) == before


def test_the_database_refuses_a_maximum_that_is_not_positive(space):
    with pytest.raises(IntegrityError), transaction.atomic():
        Space.objects.filter(pk=space.pk).update(max_charge_minor=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        SpaceChargeLimit.objects.create(space=space, currency="JPY", max_charge_minor=-1)


def test_a_maximum_per_currency_is_saved_and_used_by_amount_entry_and_the_api(
    client, space, space_admin
):
    client.force_login(space_admin)
    assert change(client, space, limits=[("JPY", 5000)]).status_code == 302
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    card = PaymentCardFactory(customer=CustomerFactory(space=space))
    issue = services.charge_issue_start(customer=card.customer, source=ChargeIssue.Source.STAFF)

    def enter(amount, currency):
        return services.charge_amount_enter(
            issue=issue,
            acting_user=clerk,
            amount=amount,
            currency=currency,
            notification_subject="s",
            notification_body="b",
        )

    assert space.max_charge_for("jpy") == 5000 and space.max_charge_for("EUR") == 1_000_000
    with pytest.raises(InvalidAmount, match="5,000 JPY"):
        enter("5001", "JPY")
    with pytest.raises(InvalidAmount, match="5,000 JPY"):
        api_services.api_amount_minor("5001", "JPY", space=space)
    # 5001 EUR is below the space's general maximum of 10,000.00 EUR: only JPY has its own.
    assert api_services.api_amount_minor("5001", "EUR", space=space) == 500100
    assert enter("5000", "JPY").amount_minor == 5000


# --- Webhook URL ------------------------------------------------------------------------------


REFUSED_URLS = [
    "http://127.0.0.1:8000/hooks",
    "http://10.1.2.3/hooks",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8000/hooks",
    "http://localhost:8000/hooks",
    "http://0.0.0.0/hooks",
    "http://224.0.0.1/hooks",
    "http://[::ffff:127.0.0.1]/hooks",
    "https://192.168.0.10/hooks",
    "https://user:pass@93.184.216.34/hooks",
    "https://no-such-host.invalid/hooks",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_a_webhook_url_into_our_own_network_is_refused_when_saved(client, space, space_admin, url):
    client.force_login(space_admin)
    before = snapshot(space)

    response = change(client, space, webhook_url=url)

    assert response.status_code == 200
    (message,) = response.context["adminform"].form.errors["webhook_url"]
    assert "public" in message or "resolved" in message or "user name" in message
    assert snapshot(space) == before


def test_plain_http_is_refused_unless_allowed(client, space, space_admin, settings):
    settings.WEBHOOK_ALLOW_HTTP = False  # production's default
    client.force_login(space_admin)

    refused = change(client, space, webhook_url="http://93.184.216.34/hooks")
    accepted = change(client, space, webhook_url=PUBLIC)

    assert refused.context["adminform"].form.errors["webhook_url"] == [
        "The URL must start with https://."
    ]
    assert accepted.status_code == 302
    assert Space.objects.get(pk=space.pk).webhook_url == PUBLIC


# --- Webhook secret ---------------------------------------------------------------------------


def test_every_space_has_a_generated_secret_that_the_admin_never_shows(client, space, space_admin):
    other = SpaceFactory()
    client.force_login(space_admin)

    page = client.get(reverse("admin:spaces_space_change", args=[space.pk]))

    assert len(space.webhook_secret) >= 43 and space.webhook_secret != other.webhook_secret
    assert "webhook_secret" not in page.context["adminform"].form.fields
    assert space.webhook_secret not in page.content.decode()
    with pytest.raises(IntegrityError), transaction.atomic():
        Space.objects.filter(pk=space.pk).update(webhook_secret="")


def test_setting_a_first_url_makes_a_new_secret_and_shows_it_once(client, space, space_admin):
    old = space.webhook_secret
    client.force_login(space_admin)

    response = change(client, space, follow=True, webhook_url=PUBLIC)
    again = change(client, Space.objects.get(pk=space.pk), follow=True, name="Alpha Renamed")
    page = client.get(reverse("admin:spaces_space_change", args=[space.pk]))

    space.refresh_from_db()
    assert response.redirect_chain and space.webhook_secret != old
    assert space.webhook_secret in response.content.decode()
    assert again.redirect_chain and space.name == "Alpha Renamed"
    assert space.webhook_secret not in again.content.decode()
    assert space.webhook_secret not in page.content.decode()
    event = SpaceEvent.objects.get(space=space)
    assert (event.action, event.actor) == ("webhook_secret_rotated", space_admin)


def test_a_new_space_with_a_url_shows_its_secret(client, admin_user):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:spaces_space_add"),
        form(Space(name="New", slug="new"), webhook_url=PUBLIC),
    )

    space = Space.objects.get(slug="new")
    assert response.status_code == 302
    assert any(space.webhook_secret in m for m in messages_of(response))


def test_rotating_the_secret_shows_the_new_one_and_is_audited(client, space, space_admin):
    other = SpaceFactory(name="Other")
    old, other_secret = space.webhook_secret, other.webhook_secret
    client.force_login(space_admin)

    response = client.post(
        reverse("admin:spaces_space_changelist"),
        {"action": "rotate_webhook_secret", "_selected_action": [space.pk, other.pk]},
    )

    space.refresh_from_db()
    other.refresh_from_db()
    assert response.status_code == 302
    assert space.webhook_secret != old and other.webhook_secret == other_secret
    assert [m for m in messages_of(response) if space.webhook_secret in m]
    (event,) = SpaceEvent.objects.all()
    assert (event.space, event.action, event.actor) == (
        space,
        "webhook_secret_rotated",
        space_admin,
    )
    history = client.get(reverse("admin:spaces_space_change", args=[space.pk]))
    assert "Webhook secret rotated" in history.content.decode()


def test_a_clerk_cannot_rotate_the_secret(client, space):
    client.force_login(StaffUserFactory(role=CLERK, spaces=[space]))
    old = space.webhook_secret

    client.post(
        reverse("admin:spaces_space_changelist"),
        {"action": "rotate_webhook_secret", "_selected_action": [space.pk]},
    )

    space.refresh_from_db()
    assert space.webhook_secret == old and not SpaceEvent.objects.exists()


def test_the_data_migration_gives_an_empty_secret_a_new_one(space):
    migration = importlib.import_module("spaces.migrations.0004_space_settings_validated")
    with connection.cursor() as cursor:
        # The state before the migration: the constraint did not exist, secrets could be empty.
        cursor.execute("ALTER TABLE spaces_space DROP CONSTRAINT space_webhook_secret_set")
    Space.objects.filter(pk=space.pk).update(webhook_secret="")

    migration.fill_settings(apps, None)

    assert len(Space.objects.get(pk=space.pk).webhook_secret) >= 43
