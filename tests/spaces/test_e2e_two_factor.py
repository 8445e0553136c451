"""An approver enrols an authenticator in Chromium at their first login, then logs in with it."""

from base64 import b32decode

import pytest
from django_otp.oath import totp
from playwright.sync_api import expect

from spaces.roles import APPROVER
from tests.factories import DEFAULT_PASSWORD, SpaceFactory, StaffUserFactory


def _code_from(secret: str) -> str:
    # What the authenticator app computes from the key the page shows.
    return f"{totp(b32decode(secret)):06d}"


@pytest.mark.django_db(transaction=True)
def test_approver_enrols_at_first_login_and_gets_in(live_server, page, settings):
    settings.STAFF_2FA_REQUIRED = True
    space = SpaceFactory(name="Alpha Shop", slug="alpha")
    StaffUserFactory(username="anna", role=APPROVER, spaces=[space])

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "anna")
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.click("input[type=submit]")

    expect(page).to_have_url(f"{live_server.url}/admin/two-factor/enrol/?next=%2Fadmin%2F")
    secret = page.locator("#twofactor-secret").inner_text().strip()
    expect(page.locator("#twofactor-uri")).to_contain_text("otpauth://totp/")
    page.fill("#id_token", _code_from(secret))
    page.click("#twofactor-form input[type=submit]")

    expect(page.locator("#recovery-codes li")).to_have_count(10)
    page.click("#twofactor-continue")
    expect(page.locator("#user-tools")).to_contain_text("anna")
    expect(page).to_have_url(f"{live_server.url}/admin/")
