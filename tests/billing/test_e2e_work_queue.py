"""The work queue in Chromium: a clerk's home page lists the charge waiting for them, the
sidebar counts it, and one click opens its amount entry; the approver then finds it on theirs."""

import pytest
from playwright.sync_api import expect

from billing import services
from tests.factories import (
    DEFAULT_PASSWORD,
    CustomerFactory,
    PaymentCardFactory,
    SpaceFactory,
    StaffUserFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _log_in(page, live_server, username):
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username)


def test_the_clerk_and_the_approver_find_their_work_on_the_home_page(live_server, page):
    space = SpaceFactory(name="Corner Shop", slug="corner-shop")
    StaffUserFactory(username="carla", role="clerk", spaces=[space])
    StaffUserFactory(username="arne", role="approver", spaces=[space])
    customer = CustomerFactory(space=space, name="Erika Mustermann", email="erika@example.test")
    issue = services.charge_issue_start(
        customer=PaymentCardFactory(customer=customer).customer, source="staff"
    )

    _log_in(page, live_server, "carla")
    queue = page.locator("#queue-awaiting_amount")
    expect(queue.locator(".queue-count")).to_have_text("1")
    expect(queue).to_contain_text("erika@example.test")
    sidebar = page.locator("#nav-sidebar")
    expect(sidebar.get_by_role("link", name="Awaiting amount entry")).to_contain_text("1")
    queue.get_by_role("link", name=f"Charge #{issue.pk}").click()
    page.fill("#id_amount", "49.90")
    page.click("#submit-amount")
    expect(page.locator(".messagelist")).to_contain_text("entered for approval")
    page.goto(f"{live_server.url}/admin/")
    expect(page.locator("#queue-awaiting_amount .queue-count")).to_have_text("0")
    page.click("#logout-form button")

    _log_in(page, live_server, "arne")
    approval = page.locator("#queue-awaiting_approval")
    expect(approval.locator(".queue-count")).to_have_text("1")
    approval.get_by_role("link", name=f"Charge #{issue.pk}").click()
    expect(page.locator("#approval-amount")).to_have_text("49.90 EUR")
