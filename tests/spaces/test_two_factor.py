"""Staff second factor (issue 7 §6): TOTP with django-otp, required for approvers, admins and
superusers when STAFF_2FA_REQUIRED is on; enrolment in the admin; recovery codes; resets.

Codes are computed here from the device's key with django-otp's own TOTP function, as the
user's authenticator app would.
"""

import re
from datetime import timedelta

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from spaces import twofactor
from spaces.roles import ADMIN, APPROVER, CLERK
from tests.factories import DEFAULT_PASSWORD, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

INDEX = "/admin/"
ISSUES = "/admin/billing/chargeissue/"


@pytest.fixture
def required(settings):
    settings.STAFF_2FA_REQUIRED = True


@pytest.fixture
def space():
    return SpaceFactory(name="Alpha Shop", slug="alpha")


def _login(client, username):
    """The admin login page, as a person uses it (and so through django-axes)."""
    response = client.post(
        f"{reverse('admin:login')}?next={INDEX}",
        {"username": username, "password": DEFAULT_PASSWORD, "next": INDEX},
    )
    assert response.status_code == 302, response.content.decode()
    return response


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def _enrolled(user) -> tuple[TOTPDevice, list[str]]:
    device = twofactor.totp_device_start(user=user)
    return twofactor.totp_device_confirm(user=user, device_id=device.pk, token=_code(device))


def _later(seconds=40):
    """A frozen moment later on: past the 30-second step whose code enrolment used (a TOTP code
    works once) and past django-otp's delay after a wrong code (1 s, doubling). The test
    computes its codes inside the same moment, as the app on a phone would."""
    return time_machine.travel(timezone.now() + timedelta(seconds=seconds), tick=False)


def test_approver_without_device_enrols_sees_codes_once_then_reaches_the_admin(
    client, required, space
):
    approver = StaffUserFactory(username="anna", role=APPROVER, spaces=[space])
    _login(client, "anna")

    response = client.get(INDEX)
    assert response.status_code == 302
    assert response.url == f"{reverse('twofactor:enrol')}?next=%2Fadmin%2F"
    assert client.get(ISSUES).url.startswith(reverse("twofactor:enrol"))

    page = client.get(response.url)
    assert page.status_code == 200
    device = TOTPDevice.objects.get(user=approver)
    assert not device.confirmed
    html = page.content.decode()
    assert page.context["secret"] in html and len(page.context["secret"]) == 32
    assert "otpauth://totp/Charging%20back%20office%3Aanna?secret=" in html
    assert "<svg" in html  # the QR code

    wrong = client.post(page.request["PATH_INFO"], {"token": "000000", "next": INDEX})
    assert wrong.status_code == 200 and "That code is not valid" in wrong.content.decode()
    device.refresh_from_db()
    assert not device.confirmed and client.get(INDEX).status_code == 302

    with _later():
        done = client.post(reverse("twofactor:enrol"), {"token": _code(device), "next": INDEX})
    assert done.status_code == 302 and done.url == reverse("twofactor:recovery_codes")
    device.refresh_from_db()
    assert device.confirmed

    codes_page = client.get(done.url)
    shown = re.findall(r"<li>([a-z2-7]{8})</li>", codes_page.content.decode())
    stored = StaticToken.objects.filter(device__user=approver).values_list("token", flat=True)
    assert len(shown) == 10 and sorted(shown) == sorted(stored)
    # Shown once: the second visit has nothing to show and moves on.
    assert client.get(done.url).status_code == 302
    assert client.get(INDEX).status_code == 200
    assert client.get(ISSUES).status_code == 200
    assert LogEntry.objects.filter(
        user=approver, object_id=str(approver.pk), change_message__startswith="Enrolled"
    ).exists()


def test_approver_with_device_and_wrong_code_cannot_see_any_admin_page(client, required, space):
    approver = StaffUserFactory(username="anna", role=APPROVER, spaces=[space])
    device, _ = _enrolled(approver)
    _login(client, "anna")

    for url in (INDEX, ISSUES, reverse("admin:spaces_space_changelist")):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("twofactor:verify"))

    verify = reverse("twofactor:verify")
    with _later():
        wrong = client.post(verify, {"token": "123456", "next": INDEX})
    assert wrong.status_code == 200
    assert "That code is not valid" in wrong.content.decode()
    assert client.get(INDEX).url.startswith(verify)

    with _later(seconds=80):
        right = client.post(verify, {"token": _code(device), "next": ISSUES})
    assert right.status_code == 302 and right.url == ISSUES
    assert client.get(ISSUES).status_code == 200


def test_wrong_codes_in_a_row_are_throttled(client, required, space):
    approver = StaffUserFactory(username="anna", role=APPROVER, spaces=[space])
    device, _ = _enrolled(approver)
    _login(client, "anna")
    verify = reverse("twofactor:verify")

    with _later():
        client.post(verify, {"token": "123456"})
        # Even the right code waits until django-otp's delay after a wrong one has passed.
        throttled = client.post(verify, {"token": _code(device)})
    assert "Too many wrong codes" in throttled.content.decode()
    assert client.get(INDEX).status_code == 302


def test_a_recovery_code_works_once(client, required, space):
    approver = StaffUserFactory(username="anna", role=APPROVER, spaces=[space])
    _, codes = _enrolled(approver)
    verify = reverse("twofactor:verify")

    _login(client, "anna")
    # Typed as people do: capitals, a dash in the middle.
    typed = f"{codes[0][:4].upper()}-{codes[0][4:].upper()}"
    used = client.post(verify, {"token": typed, "next": INDEX}, follow=True)
    assert used.status_code == 200 and used.request["PATH_INFO"] == INDEX
    assert "You used a recovery code; 9 left" in used.content.decode()
    assert StaticToken.objects.filter(device__user=approver).count() == 9

    client.post(reverse("admin:logout"))
    _login(client, "anna")
    again = client.post(verify, {"token": codes[0], "next": INDEX})
    assert again.status_code == 200 and "That code is not valid" in again.content.decode()
    assert client.get(INDEX).url.startswith(verify)


def test_admins_and_superusers_are_required_too(client, required, space):
    StaffUserFactory(username="ada", role=ADMIN, spaces=[space])
    get_user_model().objects.create_superuser("root", "root@example.test", DEFAULT_PASSWORD)

    for username in ("ada", "root"):
        client.post(reverse("admin:logout"))
        _login(client, username)
        assert client.get(INDEX).url.startswith(reverse("twofactor:enrol"))


def test_clerk_is_not_required_when_the_setting_is_on(client, required, space):
    StaffUserFactory(username="clara", role=CLERK, spaces=[space])
    _login(client, "clara")

    assert client.get(INDEX).status_code == 200
    assert client.get(ISSUES).status_code == 200
    assert not TOTPDevice.objects.exists()


def test_a_clerk_who_enrolled_is_asked_for_the_code(client, space):
    clerk = StaffUserFactory(username="clara", role=CLERK, spaces=[space])
    _enrolled(clerk)
    _login(client, "clara")

    assert client.get(INDEX).url.startswith(reverse("twofactor:verify"))


def test_setting_off_leaves_the_password_login_unchanged(client, settings, space):
    settings.STAFF_2FA_REQUIRED = False
    StaffUserFactory(username="anna", role=APPROVER, spaces=[space])
    get_user_model().objects.create_superuser("root", "root@example.test", DEFAULT_PASSWORD)

    for username in ("anna", "root"):
        client.post(reverse("admin:logout"))
        assert _login(client, username).url == INDEX
        assert client.get(INDEX).status_code == 200
    assert not TOTPDevice.objects.exists()


def test_space_admin_resets_a_members_second_factor_audited(client, required, space):
    ada = StaffUserFactory(username="ada", role=ADMIN, spaces=[space])
    anna = StaffUserFactory(username="anna", role=APPROVER, spaces=[space])
    stranger = StaffUserFactory(username="otto", role=APPROVER, spaces=[SpaceFactory()])
    ada_device, _ = _enrolled(ada)
    anna_device, _ = _enrolled(anna)
    stranger_device, _ = _enrolled(stranger)

    # Anna is logged in and verified in another browser; the reset ends that verification.
    anna_browser = client.__class__()
    _login(anna_browser, "anna")
    with _later():
        anna_browser.post(reverse("twofactor:verify"), {"token": _code(anna_device)})
    assert anna_browser.get(INDEX).status_code == 200

    _login(client, "ada")
    with _later():
        client.post(reverse("twofactor:verify"), {"token": _code(ada_device)})
    changelist = reverse("admin:otp_totp_totpdevice_changelist")
    listed = client.get(changelist)
    assert listed.status_code == 200
    # Only devices of Ada's space; never a secret.
    assert {d.user.username for d in listed.context["cl"].result_list} == {"ada", "anna"}
    assert anna_device.key not in listed.content.decode()

    response = client.post(
        changelist,
        {"action": "reset_second_factor", "_selected_action": [anna_device.pk, stranger_device.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "The second factor of anna was reset" in response.content.decode()
    assert not TOTPDevice.objects.filter(user=anna).exists()
    assert not StaticDevice.objects.filter(user=anna).exists()
    # Otto is in another space: not in Ada's list, so the action could not reach him.
    assert TOTPDevice.objects.filter(user=stranger, confirmed=True).exists()
    entry = LogEntry.objects.get(user=ada, object_id=str(anna.pk))
    assert entry.content_type.model == "user" and "Reset the second factor" in str(entry)

    assert anna_browser.get(INDEX).url.startswith(reverse("twofactor:enrol"))


def test_reset_rules(space):
    ada = StaffUserFactory(username="ada", role=ADMIN, spaces=[space])
    clerk = StaffUserFactory(username="clara", role=CLERK, spaces=[space])
    stranger = StaffUserFactory(username="otto", role=APPROVER, spaces=[SpaceFactory()])
    root = get_user_model().objects.create_superuser("root", "root@example.test", "x")
    for user in (ada, clerk, stranger, root):
        _enrolled(user)

    refusals = [
        (stranger, ada, "not_allowed"),  # another space
        (root, ada, "not_allowed"),  # a superuser, by a space admin
        (ada, ada, "own_device"),
        (ada, clerk, "not_allowed"),  # clerks may not reset
    ]
    for user, acting_user, code in refusals:
        with pytest.raises(twofactor.TwoFactorError) as refused:
            twofactor.second_factor_reset(user=user, acting_user=acting_user)
        assert refused.value.code == code
    assert TOTPDevice.objects.filter(confirmed=True).count() == 4
    assert not LogEntry.objects.filter(change_message__startswith="Reset").exists()

    assert twofactor.second_factor_reset(user=stranger, acting_user=root) == 2
    assert not TOTPDevice.objects.filter(user=stranger).exists()


def test_recovery_codes_and_secrets_have_no_admin_page(client, admin_user):
    client.force_login(admin_user)
    assert client.get(INDEX).status_code == 200  # the setting is off: no device, no code
    device, codes = _enrolled(admin_user)

    change = client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk]))
    assert change.url.startswith(reverse("twofactor:verify"))  # enrolled: the code first
    with _later():
        client.post(reverse("twofactor:verify"), {"token": _code(device)})
    assert client.get("/admin/otp_static/staticdevice/").status_code == 404
    change = client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk]))
    assert change.status_code == 200
    html = change.content.decode()
    assert device.key not in html and codes[0] not in html and "otpauth://" not in html
