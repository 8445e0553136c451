import pytest
from django.urls import reverse

from spaces.models import Space
from spaces.roles import ADMIN, APPROVER, CLERK
from tests.factories import SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

# The space page's inlines (maximum per currency, secret history), posted with no rows.
NO_INLINE_ROWS = {
    f"{prefix}-{field}": 0
    for prefix in ("charge_limits", "events")
    for field in ("TOTAL_FORMS", "INITIAL_FORMS")
}


@pytest.fixture
def two_spaces():
    alpha = SpaceFactory(name="Alpha Shop", slug="alpha")
    beta = SpaceFactory(name="Beta Shop", slug="beta")
    return alpha, beta


@pytest.mark.parametrize("role", [CLERK, APPROVER, ADMIN])
def test_staff_see_only_their_spaces_in_the_admin_list(client, two_spaces, role):
    alpha, beta = two_spaces
    user = StaffUserFactory(role=role, spaces=[alpha])
    client.force_login(user)

    response = client.get(reverse("admin:spaces_space_changelist"))

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [alpha]
    assert b"Beta Shop" not in response.content


def test_another_spaces_page_is_not_reachable(client, two_spaces):
    alpha, beta = two_spaces
    client.force_login(StaffUserFactory(role=CLERK, spaces=[alpha]))

    response = client.get(reverse("admin:spaces_space_change", args=[beta.pk]))

    # Django's admin answers an object outside the queryset like a missing one.
    assert response.status_code == 302
    assert response.url == reverse("admin:index")


def test_superuser_sees_every_space(client, admin_user, two_spaces):
    client.force_login(admin_user)

    response = client.get(reverse("admin:spaces_space_changelist"))

    assert set(response.context["cl"].result_list) == set(two_spaces)


def test_clerk_cannot_change_a_space(client, two_spaces):
    alpha, _ = two_spaces
    client.force_login(StaffUserFactory(role=CLERK, spaces=[alpha]))

    response = client.post(
        reverse("admin:spaces_space_change", args=[alpha.pk]),
        {"name": "Renamed", "slug": "alpha", "default_currency": "EUR"},
    )

    assert response.status_code == 403
    alpha.refresh_from_db()
    assert alpha.name == "Alpha Shop"


def test_space_admin_can_rename_their_space_but_not_another(client, two_spaces):
    alpha, beta = two_spaces
    client.force_login(StaffUserFactory(role=ADMIN, spaces=[alpha]))
    url = reverse("admin:spaces_space_change", args=[alpha.pk])
    data = {
        "name": "Alpha Renamed",
        "slug": "alpha",
        "default_currency": "EUR",
        "max_charge_minor": 1000000,
        "refund_threshold_minor": 0,
        **NO_INLINE_ROWS,
    }

    assert client.post(url, data).status_code == 302
    other = client.post(
        reverse("admin:spaces_space_change", args=[beta.pk]), {**data, "slug": "beta"}
    )

    assert Space.objects.get(pk=alpha.pk).name == "Alpha Renamed"
    assert other.status_code == 302 and other.url == reverse("admin:index")
    assert Space.objects.get(pk=beta.pk).name == "Beta Shop"


def test_user_without_membership_sees_no_space(client, two_spaces):
    client.force_login(StaffUserFactory(role=CLERK, spaces=[]))

    response = client.get(reverse("admin:spaces_space_changelist"))

    assert list(response.context["cl"].result_list) == []


def test_a_new_refund_threshold_is_audited_with_who_changed_it_from_what(client, two_spaces):
    from spaces.models import SpaceEvent

    alpha, _ = two_spaces
    admin = StaffUserFactory(username="admin1", role=ADMIN, spaces=[alpha])
    client.force_login(admin)
    url = reverse("admin:spaces_space_change", args=[alpha.pk])
    data = {
        "name": "Alpha Shop",
        "slug": "alpha",
        "default_currency": "EUR",
        "max_charge_minor": 1000000,
        **NO_INLINE_ROWS,
    }

    refused = client.post(url, {**data, "refund_threshold_minor": -1})
    assert (
        refused.status_code == 200
        and "refund_threshold_minor" in refused.context["adminform"].form.errors
    )
    assert client.post(url, {**data, "refund_threshold_minor": 2500}).status_code == 302
    assert (
        client.post(url, {**data, "refund_threshold_minor": 2500, "name": "A"}).status_code == 302
    )

    assert Space.objects.get(pk=alpha.pk).refund_threshold_minor == 2500
    [event] = SpaceEvent.objects.filter(space=alpha, action="refund_threshold_changed")
    assert event.actor == admin
    assert event.detail == {"before": 0, "after": 2500, "currency": "EUR"}
