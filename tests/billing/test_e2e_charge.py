"""The whole charging case in Chromium: a registered card starts an issue, a clerk enters the
amount, an approver approves, the card is charged once and the customer is told."""

import pytest
from django.core import mail
from playwright.sync_api import expect

from billing.models import ChargeIssue
from cards import services as card_services
from spaces.roles import APPROVER, CLERK
from tests.billing.conftest import VISA, payment_intents_for
from tests.conftest import confirm_setup_intent
from tests.factories import DEFAULT_PASSWORD, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _log_in(page, live_server, username):
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username)


def _log_out(page):
    page.click("#logout-form button")
    expect(page.locator("#content")).to_contain_text("Log in again")


def _open_issue(page, live_server, issue):
    page.goto(f"{live_server.url}/admin/")
    page.get_by_role("link", name="Charge issues").first.click()
    page.locator("#result_list").get_by_role("link", name=str(issue.pk), exact=True).click()
    expect(page.locator("#content h2").first).to_contain_text(str(issue))


def test_clerk_enters_approver_approves_and_the_card_is_charged_once(
    live_server, page, localstripe
):
    space = SpaceFactory(name="Corner Shop", slug="corner-shop", default_currency="EUR")
    clerk = StaffUserFactory(username="carla", role=CLERK, spaces=[space])
    approver = StaffUserFactory(username="arne", role=APPROVER, spaces=[space])
    # The customer's side (the hosted page) has its own browser test; here the card is
    # registered through the same services, and the "card registered" event starts the issue
    # when the registration commits.
    intent = card_services.registration_setup_intent_start(space=space)
    confirm_setup_intent(localstripe, intent.client_secret, VISA)
    registration = card_services.card_registration_complete(
        space=space, setup_intent_id=intent.id, name="Kim Kunde", email="kim@example.test"
    )
    issue = ChargeIssue.objects.get(customer=registration.customer)
    assert issue.state == ChargeIssue.State.AWAITING_AMOUNT
    mail.outbox.clear()

    # The clerk: 1. charge amount entry.
    _log_in(page, live_server, "carla")
    _open_issue(page, live_server, issue)
    expect(page.locator(".field-customer_name")).to_contain_text("Kim Kunde")
    expect(page.locator("#step-approval")).to_have_count(0)
    page.get_by_role("link", name="1. Charge amount entry").click()
    expect(page.locator("#charge-summary")).to_contain_text("kim@example.test")
    page.fill("#id_amount", "49.90")
    page.select_option("#id_currency", "EUR")
    page.fill("#id_notification_subject", "Your order 1234")
    page.fill("#id_notification_body", "We charge your card for order 1234 today.")
    page.click("#submit-amount")
    expect(page.locator(".messagelist")).to_contain_text("entered for approval")
    expect(page.locator(".field-state")).to_contain_text("Awaiting approval")
    _log_out(page)

    # The approver: approval.
    _log_in(page, live_server, "arne")
    _open_issue(page, live_server, issue)
    page.get_by_role("link", name="Approval").click()
    expect(page.locator("#approval-amount")).to_have_text("49.90 EUR")
    expect(page.locator("#approval-entered-by")).to_contain_text("carla")
    page.click("#approve")
    expect(page.locator(".messagelist")).to_contain_text("was approved")
    # Approved without a charge date: charged at once (tasks run eagerly on commit here).
    expect(page.locator(".field-state")).to_contain_text("Succeeded")

    issue.refresh_from_db()
    assert issue.state == ChargeIssue.State.SUCCEEDED
    assert (issue.entered_by, issue.approved_by) == (clerk, approver)
    intents = payment_intents_for(localstripe, issue)
    assert [(pi["amount"], pi["currency"], pi["status"]) for pi in intents] == [
        (4990, "eur", "succeeded")
    ]
    assert issue.attempt.provider_payment_intent_id == intents[0]["id"]
    to_customer = [m for m in mail.outbox if m.to == ["kim@example.test"]]
    assert [m.subject for m in to_customer] == [
        "Your order 1234",
        "Corner Shop: receipt for €49.90",
    ]
    assert "We charge your card for order 1234 today." in to_customer[0].body

    # The history lists every step with who took it.
    page.get_by_role("link", name="History").click()
    rows = page.locator("#charge-history tbody tr")
    expect(rows).to_have_count(5)
    history = [
        (
            rows.nth(i).locator(".event-action").inner_text(),
            rows.nth(i).locator(".event-actor").inner_text(),
        )
        for i in range(5)
    ]
    # In words, never the raw codes (issue 12: "the history shows labels").
    assert history == [
        ("Started", "system"),
        ("1. Charge amount entered", "carla"),
        ("Approved", "arne"),
        ("Charge started", "system"),
        ("Charge succeeded", "system"),
    ]
