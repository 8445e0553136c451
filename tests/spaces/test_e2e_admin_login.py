"""A clerk logs into the admin in Chromium and sees only the clerk's space."""

import pytest
from playwright.sync_api import expect

from spaces.roles import CLERK
from tests.factories import DEFAULT_PASSWORD, SpaceFactory, StaffUserFactory


@pytest.mark.django_db(transaction=True)
def test_clerk_logs_in_and_sees_only_their_space(live_server, page):
    mine = SpaceFactory(name="Clerk Corner", slug="clerk-corner")
    SpaceFactory(name="Someone Elses Shop", slug="elsewhere")
    StaffUserFactory(username="clara", role=CLERK, spaces=[mine])

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "clara")
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("clara")

    page.click("text=Spaces >> nth=-1")
    expect(page.locator("#result_list")).to_contain_text("Clerk Corner")
    expect(page.locator("#result_list")).not_to_contain_text("Someone Elses Shop")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
