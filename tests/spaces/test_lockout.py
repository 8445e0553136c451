"""Failed logins lock the username and the address for a while (issue 7 §6, django-axes).

Every login here goes through the admin login page, so through django-axes and its rows.
"""

from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from spaces.roles import ADMIN, CLERK
from tests.factories import DEFAULT_PASSWORD, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
HOME = "10.0.0.1"


@pytest.fixture
def space():
    return SpaceFactory(name="Alpha Shop", slug="alpha")


def _login(client, username, password=DEFAULT_PASSWORD, ip=HOME):
    return client.post(
        LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip
    )


def _fail(client, username, times, ip=HOME):
    return [_login(client, username, "wrong-password", ip).status_code for _ in range(times)]


def _locked_out(response) -> bool:
    return response.status_code == 429 and "Too many failed logins" in response.content.decode()


def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(client, settings, space):
    assert settings.AXES_FAILURE_LIMIT == 5
    StaffUserFactory(username="clara", role=CLERK, spaces=[space])

    # Four ordinary failures; the fifth is the one that locks.
    assert _fail(client, "clara", 5) == [200, 200, 200, 200, 429]
    right = _login(client, "clara")

    assert _locked_out(right)
    assert right["Retry-After"] == str(15 * 60)
    html = right.content.decode()
    assert "Charging back office" in html and 'href="/admin/login/"' in html
    assert "15 minutes from now" in html
    assert client.get("/admin/").status_code == 302  # not logged in
    attempt = AccessAttempt.objects.get(username="clara", ip_address=HOME)
    assert attempt.failures_since_start >= 5
    assert "wrong-password" not in attempt.post_data  # axes masks the password
    assert AccessFailureLog.objects.filter(username="clara", locked_out=True).exists()
    assert not AccessLog.objects.filter(username="clara").exists()


def test_the_address_and_the_account_are_locked_separately(client, space):
    StaffUserFactory(username="clara", role=CLERK, spaces=[space])
    StaffUserFactory(username="carl", role=CLERK, spaces=[space])
    StaffUserFactory(username="cora", role=CLERK, spaces=[space])

    # Five tries at one account from one address: that address is locked for anyone...
    _fail(client, "clara", 5)
    assert _locked_out(_login(client, "carl"))
    # ...and that account from any address.
    assert _locked_out(_login(client, "clara", ip="10.0.0.2"))
    # Another account from another address is untouched.
    assert _login(client, "cora", ip="10.0.0.3").status_code == 302


def test_many_accounts_from_one_address_lock_the_address(client, space):
    StaffUserFactory(username="clara", role=CLERK, spaces=[space])
    for name in ("ann", "ben", "cid", "dan", "eve"):
        _fail(client, name, 1)

    assert _locked_out(_login(client, "clara"))
    assert _login(client, "clara", ip="10.0.0.2").status_code == 302


def test_the_lock_ends_after_the_cool_off(client, space):
    StaffUserFactory(username="clara", role=CLERK, spaces=[space])
    _fail(client, "clara", 5)

    with time_machine.travel(timezone.now() + timedelta(minutes=14), tick=False):
        assert _locked_out(_login(client, "clara"))  # and that try restarts the wait
    with time_machine.travel(timezone.now() + timedelta(minutes=14 + 16), tick=False):
        response = _login(client, "clara")
        assert response.status_code == 302 and response.url == "/admin/"
    assert AccessLog.objects.filter(username="clara", ip_address=HOME).exists()


def test_axes_reset_command_lifts_a_lock(client, space):
    StaffUserFactory(username="clara", role=CLERK, spaces=[space])
    _fail(client, "clara", 5)

    call_command("axes_reset_username", "clara")
    call_command("axes_reset_ip", HOME)

    assert _login(client, "clara").status_code == 302


def test_login_audit_is_read_only_and_for_superusers_only(client, space):
    _fail(client, "clara", 1)
    attempt = AccessAttempt.objects.get()
    admin = StaffUserFactory(username="ada", role=ADMIN, spaces=[space])
    root = get_user_model().objects.create_superuser("root", "root@example.test", "x")
    pages = [
        reverse("admin:axes_accessattempt_changelist"),
        reverse("admin:axes_accessfailurelog_changelist"),
        reverse("admin:axes_accesslog_changelist"),
    ]

    client.force_login(admin)
    assert [client.get(url).status_code for url in pages] == [403, 403, 403]

    client.force_login(root)
    assert [client.get(url).status_code for url in pages] == [200, 200, 200]
    change = reverse("admin:axes_accessattempt_change", args=[attempt.pk])
    assert client.get(change).status_code == 200
    assert client.post(change, {"username": "someone-else"}).status_code == 403
    attempt.refresh_from_db()
    assert attempt.username == "clara"
    assert client.get(reverse("admin:axes_accessattempt_add")).status_code == 403
