"""Staff use the case page's action buttons in Chromium. The buttons sit inside the admin's own
change form (forms cannot nest), so only a browser shows that each reaches its own action."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from billing import services as billing_services
from chargeflows.models import ChargeFlowCase
from tests.chargeflows.conftest import DECLINES, approved_issue, real_card, real_customer
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_case_page_buttons_start_the_next_level_change_the_email_and_cancel(
    live_server, page, space, clerk, approver, localstripe
):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    case = ChargeFlowCase.objects.get(issue=issue)
    assert case.levels.count() == 1

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", clerk.username)
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.click("input[type=submit]")
    url = live_server.url + reverse("admin:chargeflows_chargeflowcase_change", args=[case.pk])

    page.goto(url)
    page.click("#action-next-level")
    expect(page.locator(".messagelist")).to_be_visible()
    expect(page.locator(".level-row")).to_have_count(2)

    page.fill("#case-actions input[name=email]", "accounts@example.test")
    page.click("#action-recipient")
    expect(page.locator(".messagelist")).to_contain_text("new address")

    page.click("#action-cancel")
    expect(page.locator(".messagelist")).to_contain_text("Collection")

    case.refresh_from_db()
    assert (case.state, case.recipient_email) == ("cancelled", "accounts@example.test")
    actions = list(case.events.exclude(actor=None).values_list("action", flat=True))
    assert actions == ["next_level_now", "recipient_changed", "cancelled"]


def test_the_payment_page_link_is_copied_to_the_clipboard_and_stays_visible(
    live_server, page, context, space, clerk, approver, localstripe, settings
):
    from chargeflows.models import ChargeFlowLevelPaymentLink
    from chargeflows.services import payment_link_check
    from tests.chargeflows.conftest import one_level_flow

    settings.PUBLIC_BASE_URL = live_server.url
    one_level_flow(space, run_payment_link=True)
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    case = ChargeFlowCase.objects.get(issue=issue)
    link = ChargeFlowLevelPaymentLink.objects.get(level__case=case)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", clerk.username)
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.click("input[type=submit]")
    page.goto(live_server.url + reverse("admin:chargeflows_chargeflowcase_change", args=[case.pk]))
    page.click("#action-copy-link")

    # The URL stays visible (the fallback), and it is the case's open link (its token is
    # signed with a timestamp, so it is read back rather than compared with a fresh one).
    shown = page.input_value("#payment-link-url")
    assert shown.startswith(f"{live_server.url}/pay/")
    assert payment_link_check(token=shown.rstrip("/").rsplit("/", 1)[1]).pk == link.pk
    page.click("#copy-payment-link")
    expect(page.locator("#copy-payment-link-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == shown
    assert list(case.events.filter(actor=clerk).values_list("action", flat=True)) == ["link_copied"]
