"""Issue 17 §1: the admin is not an oracle.

Every admin registered on the site (ours and the libraries': users, second factors, login
lockout, beat schedules) answers only the lookups it declares; a lookup on a secret, on the
model itself or one relation away (`?space__webhook_secret__startswith=`), is a 400 that does
not depend on whether the guess was right. Secrets are never shown, searched or sorted on,
and every filter, search, sort, date and popup link the admin itself renders still works.
"""

import re

import pytest
from axes.models import AccessLog
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import identify_hasher
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from billing import api_services
from billing.models import ApiKey
from config.admin_site import SECRET_FIELDS, is_secret, secret_field_errors
from config.work_queue import queues
from spaces.models import Space
from spaces.roles import ADMIN, APPROVER, CLERK
from tests.factories import (
    CustomerFactory,
    PaymentCardFactory,
    SpaceFactory,
    StaffUserFactory,
)

pytestmark = pytest.mark.django_db

SESSION_HASH = "5e55" * 16


@pytest.fixture
def world():
    """Two spaces; in the first a space admin, a clerk and an approver with an authenticator
    and recovery codes, an API key; a login in the lockout library's log; a superuser.
    Returns the users by name and every secret's value (one row of each secret field)."""
    alpha = SpaceFactory(name="Alpha Shop", slug="alpha")
    SpaceFactory(name="Gamma Shop", slug="gamma")
    root = StaffUserFactory(username="root", is_superuser=True)
    space_admin = StaffUserFactory(username="space-admin", role=ADMIN, spaces=[alpha])
    clerk = StaffUserFactory(username="clerk", role=CLERK, spaces=[alpha])
    approver = StaffUserFactory(username="approver", role=APPROVER, spaces=[alpha])
    device = TOTPDevice.objects.create(user=approver, name="Authenticator app", confirmed=True)
    recovery = StaticDevice.objects.create(user=approver, name="Recovery codes", confirmed=True)
    token = StaticToken.objects.create(device=recovery, token="rcvcode1")
    api_key, _ = api_services.api_key_create(space=alpha, name="ERP", acting_user=root)
    AccessLog.objects.create(
        username="clerk",
        ip_address="10.0.0.1",
        user_agent="pytest",
        http_accept="*/*",
        path_info="/admin/login/",
        session_hash=SESSION_HASH,
    )
    PaymentCardFactory(customer=CustomerFactory(space=alpha, name="Kim Kunde"))
    session = SessionStore()
    session["note"] = "a session of someone else"
    session.create()
    alpha.refresh_from_db()
    approver.refresh_from_db()
    secrets = {
        "spaces.Space.webhook_secret": alpha.webhook_secret,
        "billing.ApiKey.key_hash": api_key.key_hash,
        "otp_totp.TOTPDevice.key": device.key,
        "otp_static.StaticToken.token": token.token,
        "axes.AccessLog.session_hash": SESSION_HASH,
        "auth.User.password": approver.password,
        "sessions.Session.session_key": session.session_key,
        "sessions.Session.session_data": Session.objects.get(pk=session.session_key).session_data,
    }
    assert set(secrets) == SECRET_FIELDS  # a new secret needs a row here, to be tried
    users = {"root": root, "space_admin": space_admin, "clerk": clerk}
    return users, secrets


# Fields named like a secret that are not one, and why (proxy models count as their concrete
# model: the dashboard's space list is spaces.Space).
NOT_SECRET = {
    "django_celery_beat.PeriodicTask.routing_key": "the broker queue's routing name",
    "payments.ChargeAttempt.idempotency_key": "made of our own ids; staff search attempts by it",
    "billing.ApiIdempotencyRecord.key": "the client's Idempotency-Key header, no credential",
    "billing.ApiIdempotencyRecord.request_hash": "a hash of a request body, not of a secret",
    "cards.PaymentCard.lookup_key": "seed 003's card lookup key: number, brand, last 4, expiry",
    "recurring.RecurringLine.card_lookup_key": "the same, on a recurring line",
    "recurring.HistoricalRecurringLine.card_lookup_key": "the same, in the line's history",
    "chargeflows.ChargeFlowLevelConfiguration.run_token_charge": "a yes/no setting",
    "chargeflows.HistoricalChargeFlowLevelConfiguration.run_token_charge": "the same, history",
}
LOOKS_SECRET = re.compile(r"secret|token|hash|password|salt|nonce|session|(^|_)key$")


def test_every_field_named_like_a_secret_is_declared_one_or_explained():
    """A new secret column (a signing key, a token) is caught here until it is added to
    SECRET_FIELDS, which the site's check and the tests above then hold to the rules."""
    named_like_a_secret = {
        _label(model, field.name)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if not field.is_relation and LOOKS_SECRET.search(field.name)
    }

    assert named_like_a_secret - SECRET_FIELDS - set(NOT_SECRET) == set()
    assert SECRET_FIELDS <= named_like_a_secret | {"sessions.Session.session_data"}


def _label(model, field_name: str) -> str:
    return f"{model._meta.concrete_model._meta.label}.{field_name}"


def _secret_paths(model) -> list[tuple[str, str]]:
    """(lookup path, secret label) of every secret `model` reaches directly, and through one
    relation, forward or reverse ("space__webhook_secret", "totpdevice__key"): one relation
    per secret, where several lead to it (entered_by, approved_by... all to the password)."""
    paths, reached = [], set()
    for field in model._meta.get_fields():
        if not field.is_relation:
            if is_secret(model, field.name):
                paths.append((field.name, _label(model, field.name)))
            continue
        related = field.related_model
        if related is None or related == "self":
            continue
        # A reverse relation's name is its query name ("totpdevice", "api_keys").
        for secret in related._meta.concrete_model._meta.get_fields():
            label = _label(related, secret.name)
            if not secret.is_relation and is_secret(related, secret.name) and label not in reached:
                reached.add(label)
                paths.append((f"{field.name}__{secret.name}", label))
    return paths


def _guesses(value: str) -> list[tuple[str, str]]:
    """(lookup, value) pairs that all match `value`, the secret, and one that does not."""
    return [
        ("startswith", value[:3]),
        ("exact", value),
        ("regex", f"^{re.escape(value[:3])}"),
        ("gt", ""),  # every secret is above ""
        ("startswith", "~~~"),  # the wrong guess
    ]


def _request(user, query: str = ""):
    request = RequestFactory().get(f"/admin/{query}")
    request.user = user
    return request


def _list_url(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def _visible_admins(user):
    """(model, admin) of every registered admin whose list `user` may open."""
    for model, model_admin in admin.site._registry.items():
        if model_admin.has_view_or_change_permission(_request(user)):
            yield model, model_admin


def _page(response) -> bytes:
    # The page's CSRF token is masked anew for each answer; everything else must be equal.
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content)


# The holes the report found, by who found them: a clerk read the space's webhook secret, a
# space admin an approver's TOTP key, and the same lookups worked on key hashes, the lockout
# log's session hashes and the dashboard's space list.
REPORTED = [
    ("clerk", "spaces.Space", "webhook_secret"),
    ("clerk", "chargeflows.Dashboard", "webhook_secret"),
    ("space_admin", "otp_totp.TOTPDevice", "key"),
    ("space_admin", "billing.ApiKey", "key_hash"),
    ("space_admin", "billing.ApiKey", "space__webhook_secret"),
    ("root", "axes.AccessLog", "session_hash"),
    ("root", "auth.User", "password"),
    ("root", "auth.User", "totpdevice__key"),
    ("root", "otp_totp.TOTPDevice", "user__password"),
]


def test_the_reported_lookups_are_a_400_whatever_the_guess(client, world):
    users, secrets = world

    for who, label, path in REPORTED:
        client.force_login(users[who])
        model = apps.get_model(label)
        url = _list_url(model)
        secret = dict(_secret_paths(model))[path]
        assert client.get(url).status_code == 200, (who, url)

        answers = [
            client.get(url, {f"{path}__{lookup}": guess})
            for lookup, guess in _guesses(secrets[secret])
        ]

        # Refused, right guess or wrong, with the same page: nothing to learn from it.
        assert [answer.status_code for answer in answers] == [400] * 5, (who, url, path)
        assert len({_page(answer) for answer in answers}) == 1, (who, url, path)


@pytest.mark.parametrize("who", ["root", "space_admin", "clerk"])
def test_every_admin_refuses_every_secret_lookup_before_reading_a_row(world, who):
    """Every registered admin the user may open, every secret it reaches directly or one
    relation away, every kind of guess: refused where the list builds its filters, before
    any query carries the guess (Django answers the refusal with a 400, as above)."""
    users, secrets = world
    walked = set()

    for model, model_admin in _visible_admins(users[who]):
        for path, label in _secret_paths(model):
            for lookup, guess in _guesses(secrets[label]):
                query = "?" + urlencode({f"{path}__{lookup}": guess})
                with (
                    CaptureQueriesContext(connection) as queries,
                    pytest.raises(DisallowedModelAdminLookup),
                ):
                    model_admin.get_changelist_instance(_request(users[who], query))
                assert not [q for q in queries if secrets[label] in q["sql"]], (model, query)
            walked.add((model._meta.label, path))

    assert {(label, path) for user, label, path in REPORTED if user == who} <= walked
    if who == "root":  # every admin of the site was walked
        assert {label for label, _ in walked} >= {
            model._meta.label for model in admin.site._registry if _secret_paths(model)
        }


def test_a_lookup_nobody_declared_is_refused_even_on_a_harmless_field(client, world):
    users, _ = world
    client.force_login(users["clerk"])
    url = reverse("admin:cards_customer_changelist")

    assert client.get(url, {"name__startswith": "Kim"}).status_code == 400
    assert client.get(url, {"no_such_field": "1"}).status_code == 400
    # Declared: the space filter, the search box.
    space = Space.objects.get(slug="alpha")
    assert client.get(url, {"space__id__exact": space.pk}).status_code == 200
    assert client.get(url, {"q": "Kim"}).context["cl"].result_count == 1


def test_no_secret_is_reachable_through_the_popup_field_parameter(client, world):
    users, _ = world
    client.force_login(users["root"])

    for model in admin.site._registry:
        for path, _ in _secret_paths(model):
            if "__" not in path:
                response = client.get(_list_url(model), {"_to_field": path, "_popup": "1"})
                assert response.status_code == 400, (model, path)


def test_searching_for_a_secret_finds_nothing(client, world):
    users, secrets = world
    client.force_login(users["root"])

    for model, _ in _visible_admins(users["root"]):
        for path, label in _secret_paths(model):
            if "__" in path:
                continue
            response = client.get(_list_url(model), {"q": secrets[label]})
            assert response.status_code == 200, model
            assert response.context["cl"].result_count == 0, (model, path)


def test_no_page_of_the_admin_shows_a_secret(client, world):
    users, secrets = world
    client.force_login(users["root"])
    approver = get_user_model().objects.get(username="approver")
    device = TOTPDevice.objects.get(user=approver)
    summary = identify_hasher(approver.password).safe_summary(approver.password)
    pages = [
        reverse("admin:spaces_space_change", args=[Space.objects.get(slug="alpha").pk]),
        reverse("admin:billing_apikey_change", args=[ApiKey.objects.get().pk]),
        reverse("admin:otp_totp_totpdevice_change", args=[device.pk]),
        reverse(
            "admin:axes_accesslog_change",
            args=[AccessLog.objects.get(session_hash=SESSION_HASH).pk],
        ),
        reverse("admin:auth_user_change", args=[approver.pk]),
    ]
    pages += [_list_url(model) for model, _ in _visible_admins(users["root"])]

    for url in pages:
        html = client.get(url).content.decode()
        for label, value in secrets.items():
            assert value not in html, (url, label)
    # Not even Django's summary of the password hash, which shows its first characters.
    user_page = client.get(reverse("admin:auth_user_change", args=[approver.pk])).content
    assert summary["hash"].rstrip("*") not in user_page.decode()
    assert b"A password is set." in user_page


def test_the_second_factor_list_shows_staff_only_name_confirmed_and_last_used(client, world):
    users, _ = world
    client.force_login(users["space_admin"])
    device = TOTPDevice.objects.get()

    listing = client.get(reverse("admin:otp_totp_totpdevice_changelist"))
    page = client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk]))

    assert listing.status_code == 200 and page.status_code == 200
    # Whose device it is, and of the device its name, whether it is confirmed, last use.
    assert list(listing.context["cl"].list_display[1:]) == [
        "user",
        "name",
        "confirmed",
        "last_used_at",
    ]
    shown = {field for line in page.context["adminform"] for row in line for field in row}
    assert {field.field["name"] for field in shown} == {"user", "name", "confirmed", "last_used_at"}


def test_the_site_check_refuses_an_admin_that_shows_filters_searches_or_sorts_on_a_secret():
    site = admin.site
    assert not [e for e in site.check(None) if e.id == "backoffice.E001"]

    class LeakySpaceAdmin(admin.ModelAdmin):
        list_display = ("name", "secret_column")
        list_filter = ("webhook_secret",)
        search_fields = ("=webhook_secret",)
        ordering = ("-webhook_secret",)

        @admin.display(ordering="webhook_secret")
        def secret_column(self, space):
            return "…"

    class LeakyKeyAdmin(admin.ModelAdmin):
        search_fields = ("space__webhook_secret", "name")

    class EveryFieldDeviceAdmin(admin.ModelAdmin):
        pass  # no `fields`: the change form would include the editable key

    errors = {
        name: [e.msg for e in secret_field_errors(admin_class(model, site))]
        for name, admin_class, model in (
            ("space", LeakySpaceAdmin, Space),
            ("key", LeakyKeyAdmin, ApiKey),
            ("device", EveryFieldDeviceAdmin, TOTPDevice),
        )
    }

    assert len(errors["space"]) == 4  # the column's sort, the filter, the search, the order
    assert "search_fields names spaces.Space.webhook_secret" in errors["key"][0]
    assert "change form includes key" in errors["device"][0]


# --- What the admin declares keeps working -----------------------------------------------------


def test_every_filter_sort_search_date_and_popup_link_of_every_list_still_answers(client, world):
    """Each list opens, and each kind of link it renders is accepted by its changelist: a
    choice of every filter, a sort, facets, a related-object popup, a page, the error flag,
    a search, the date hierarchy."""
    users, _ = world
    root = users["root"]
    client.force_login(root)
    followed = 0

    for model, model_admin in _visible_admins(root):
        assert client.get(_list_url(model)).status_code == 200, model
        changelist: ChangeList = model_admin.get_changelist_instance(_request(root))
        links = []
        for spec in changelist.filter_specs:
            # Its first choice past "All" (the others send the same parameters).
            links += [choice["query_string"] for choice in spec.choices(changelist)][1:2]
        links += ["?o=1", "?o=-1.2", "?_facets=True", "?_popup=1&_to_field=id", "?p=1&e=1"]
        if changelist.search_fields:
            links.append("?q=alpha")
        if changelist.date_hierarchy:
            now = timezone.now()
            hierarchy = changelist.date_hierarchy
            links.append(f"?{hierarchy}__year={now.year}&{hierarchy}__month={now.month}")
        for link in links:
            # Raises DisallowedModelAdminLookup (a 400) if refused.
            model_admin.get_changelist_instance(_request(root, link))
            followed += 1

    assert followed > 150


def test_the_links_other_pages_make_into_the_lists_still_answer(client, world):
    users, _ = world
    client.force_login(users["root"])
    space = Space.objects.get(slug="alpha")
    dashboard = client.get(reverse("admin:chargeflows_dashboard_space", args=[space.pk]))
    linked = re.findall(r'href="(/admin/[^"?]+/\?[^"]+)"', dashboard.content.decode())

    urls = [queue.url for queue in queues()] + [link.replace("&amp;", "&") for link in linked]

    assert any("given_up__exact=1" in url for url in urls)
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_a_users_page_saves_and_leaves_the_password_alone(client, world):
    users, secrets = world
    client.force_login(users["root"])
    approver = get_user_model().objects.get(username="approver")
    url = reverse("admin:auth_user_change", args=[approver.pk])
    form = client.get(url).context["adminform"].form

    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(
        email="new@example.test",
        groups=[group.pk for group in approver.groups.all()],
        user_permissions=[],
        date_joined_0=approver.date_joined.strftime("%Y-%m-%d"),
        date_joined_1=approver.date_joined.strftime("%H:%M:%S"),
    )
    data.pop("date_joined", None)
    data.pop("last_login", None)
    response = client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    approver.refresh_from_db()
    assert approver.email == "new@example.test"
    assert approver.password == secrets["auth.User.password"]
