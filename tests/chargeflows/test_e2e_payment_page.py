"""A customer opens the emailed payment link in Chromium and pays with a new card against
localstripe's Stripe.js; the case and issue succeed; the link then refuses a second use."""

import re

import pytest
from django.core import mail
from playwright.sync_api import expect

from billing import services as billing_services
from billing.models import ChargeIssue
from chargeflows.models import ChargeFlowCase, ChargeFlowLevelPaymentLink
from payments.models import ChargeAttempt
from spaces.roles import APPROVER, CLERK
from tests.chargeflows.conftest import (
    DECLINES,
    approved_issue,
    intents_for_issue,
    one_level_flow,
    real_card,
    real_customer,
)
from tests.factories import SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _fill_card(page, number: str) -> None:
    element = page.locator("#card-element")
    element.locator("input[placeholder=number]").fill(number)
    element.locator("input[placeholder=exp_month]").fill("06")
    element.locator("input[placeholder=exp_year]").fill("34")
    element.locator("input[placeholder=cvc]").fill("123")
    element.locator("input[placeholder=postal_code]").fill("10115")


@pytest.fixture
def emailed_link(live_server, settings, localstripe):
    settings.PUBLIC_BASE_URL = live_server.url
    space = SpaceFactory(name="Corner Shop", slug="corner-shop")
    clerk = StaffUserFactory(role=CLERK, spaces=[space])
    approver = StaffUserFactory(role=APPROVER, spaces=[space])
    one_level_flow(space, run_token_charge=True, run_payment_link=True)
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    mail.outbox.clear()
    billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    (email,) = [m for m in mail.outbox if "complete your payment" in m.subject]
    return issue, re.search(r"(http://\S+/pay/\S+/)", email.body).group(1)


@pytest.mark.parametrize("number", ["4242424242424242", "4000002500003155"])
def test_the_customer_pays_on_the_linked_page_once(page, localstripe, emailed_link, number):
    issue, url = emailed_link
    page.goto(url)
    expect(page.locator("#amount")).to_have_text("€12.34")

    _fill_card(page, number)
    page.click("#pay")
    if number.endswith("3155"):
        # localstripe's Stripe.js shows its 3-D Secure box for a card that asks for it: when
        # the card is confirmed, and again for the payment (back from our server, which
        # holds the link's one PaymentIntent in requires_action meanwhile).
        page.get_by_role("button", name="Complete authentication").click()
        page.get_by_role("button", name="Complete authentication").click()

    expect(page.locator("h1")).to_contain_text("your payment is complete")
    expect(page.locator("#paid-amount")).to_have_text("€12.34")
    issue.refresh_from_db()
    case = ChargeFlowCase.objects.get(issue=issue)
    assert (case.state, issue.state) == ("succeeded", ChargeIssue.State.SUCCEEDED)
    link = ChargeFlowLevelPaymentLink.objects.get()
    (attempt,) = ChargeAttempt.objects.filter(payment_link=link)
    assert attempt.status == "succeeded" and attempt.amount_minor == 1234
    paid = [pi for pi in intents_for_issue(localstripe, issue) if pi["status"] == "succeeded"]
    assert len(paid) == 1 and paid[0]["metadata"]["charge_flow_payment_link"] == str(link.pk)

    # The link works once.
    page.goto(url)
    expect(page.locator("#link-problem")).to_contain_text("already been made")


GOOD_IBAN = "DE89 3704 0044 0532 0130 00"  # localstripe: the debit succeeds at once
PROCESSING_IBAN = "DE62 3704 0044 0532 0130 01"  # localstripe: processing, declined 0.5 s later


def _server_posts(page, live_server) -> list[str]:
    """The bodies of every POST the page sends to our server."""
    posts = []
    page.on(
        "request",
        lambda r: (
            posts.append(r.post_data or "")
            if r.method == "POST" and r.url.startswith(live_server.url)
            else None
        ),
    )
    return posts


def test_the_customer_pays_the_link_by_sepa_direct_debit_once(
    page, live_server, localstripe, emailed_link
):
    from cards.models import SepaDebitMethod
    from payments import gateway

    issue, url = emailed_link
    posts = _server_posts(page, live_server)
    page.goto(url)
    page.fill("#iban", GOOD_IBAN)
    page.check("#keep-account")
    page.click("#pay-sepa")

    expect(page.locator("h1")).to_contain_text("your payment is complete")
    expect(page.locator("#paid-amount")).to_have_text("€12.34")
    issue.refresh_from_db()
    case = ChargeFlowCase.objects.get(issue=issue)
    assert (case.state, issue.state) == ("succeeded", ChargeIssue.State.SUCCEEDED)
    link = ChargeFlowLevelPaymentLink.objects.get()
    (attempt,) = ChargeAttempt.objects.filter(payment_link=link)
    assert attempt.status == "succeeded" and attempt.amount_minor == 1234
    # Exactly one PaymentIntent for the link, debiting the SEPA account.
    (intent,) = [
        pi
        for pi in intents_for_issue(localstripe, issue)
        if pi["metadata"].get("charge_flow_payment_link") == str(link.pk)
    ]
    assert intent["status"] == "succeeded"
    pm = gateway.client().v1.payment_methods.retrieve(intent["payment_method"])
    assert (pm.type, pm.customer) == ("sepa_debit", issue.provider_customer_id)
    # Kept as the customer's saved SEPA method.
    account = SepaDebitMethod.objects.get(customer=issue.customer)
    assert (account.last4, account.provider_payment_method_id) == ("3000", intent["payment_method"])
    # Our server got the SetupIntent's id only, never the IBAN.
    assert any("setup_intent=seti_" in body for body in posts)
    assert not any("0532" in body for body in posts)

    # The link works once.
    page.goto(url)
    expect(page.locator("#link-problem")).to_contain_text("already been made")


def test_a_processing_debit_shows_so_until_the_providers_webhook_settles_it(
    page, live_server, localstripe, emailed_link, client
):
    from cards.models import SepaDebitMethod
    from tests.chargeflows.test_sepa_debit import _provider_settles
    from tests.payments.conftest import event_for, signed_post

    issue, url = emailed_link
    page.goto(url)
    page.fill("#iban", PROCESSING_IBAN)
    page.check("#keep-account")
    page.click("#pay-sepa")

    expect(page.locator("h1")).to_contain_text("being processed")
    expect(page.locator("#processing-amount")).to_have_text("€12.34")
    link = ChargeFlowLevelPaymentLink.objects.get()
    attempt = ChargeAttempt.objects.get(payment_link=link)
    assert attempt.status == "processing"
    case = ChargeFlowCase.objects.get(issue=issue)
    assert case.state == "running" and case.levels.get().state == "pending"
    # Opening the link again while the bank processes shows the same, and charges nothing.
    page.goto(url)
    expect(page.locator("h1")).to_contain_text("being processed")

    # The provider's payment_intent.payment_failed (signed as Stripe delivers it) settles it.
    intent = _provider_settles(attempt.provider_payment_intent_id)
    response = signed_post(client, event_for("payment_intent.payment_failed", intent))
    assert response.status_code == 200
    attempt.refresh_from_db()
    assert (attempt.status, attempt.failure_code) == ("failed", "card_declined")
    case.refresh_from_db()
    issue.refresh_from_db()
    assert case.state == "running" and case.levels.get().state == "pending"
    assert issue.state == ChargeIssue.State.COLLECTING
    assert not SepaDebitMethod.objects.exists()  # kept only once paid
    paid = [
        pi
        for pi in intents_for_issue(localstripe, issue)
        if pi["metadata"].get("charge_flow_payment_link") == str(link.pk)
    ]
    assert len(paid) == 1
    page.goto(url)
    expect(page.locator("h1")).to_contain_text("Your payment")


def test_two_tabs_pay_once_and_the_second_waits_into_the_receipt(
    page, localstripe, emailed_link, monkeypatch
):
    """The customer opens the link in two tabs and pays in both, the second while the first
    tab's charge is at the provider: one payment; the second tab says "being processed", never
    "did not go through", and turns into the receipt by itself; its card is not attached."""
    import threading

    from payments import attempts, gateway

    issue, url = emailed_link
    cards_before = {
        pm["id"]
        for pm in localstripe.list(
            "payment_methods", customer=issue.provider_customer_id, type="card"
        )
    }
    # Payments' test hook, in the live server's thread: the first tab's charge has been made
    # at the provider and nothing is recorded yet (its attempt is pending) until released.
    charged, release = threading.Event(), threading.Event()

    def hold_the_first_charge():
        charged.set()
        release.wait(timeout=60)

    monkeypatch.setattr(attempts, "_test_pause_after_provider_call", hold_the_first_charge)
    first, second = page, page.context.new_page()
    for tab, number in ((first, "4242424242424242"), (second, "5555555555554444")):
        tab.goto(url)
        _fill_card(tab, number)
    try:
        first.click("#pay")
        assert charged.wait(timeout=30), "the first tab's charge never reached the provider"
        second.click("#pay")
        expect(second.locator("h1")).to_contain_text("being processed")
        expect(second.locator("#processing")).to_contain_text("do not pay again")
    finally:
        release.set()

    expect(first.locator("h1")).to_contain_text("your payment is complete")
    # The waiting tab reloads itself into the receipt.
    expect(second.locator("h1")).to_contain_text("your payment is complete", timeout=15_000)
    expect(second.locator("#paid-amount")).to_have_text("€12.34")

    link = ChargeFlowLevelPaymentLink.objects.get()
    (attempt,) = ChargeAttempt.objects.filter(payment_link=link)
    assert attempt.status == "succeeded"
    (paid,) = [pi for pi in intents_for_issue(localstripe, issue) if pi["status"] == "succeeded"]
    assert paid["metadata"]["charge_flow_payment_link"] == str(link.pk)
    # Only the first tab's card joined the customer's cards at the provider.
    cards_after = {
        pm["id"]
        for pm in localstripe.list(
            "payment_methods", customer=issue.provider_customer_id, type="card"
        )
    }
    assert cards_after == cards_before | {paid["payment_method"]}
    assert gateway.payment_method_retrieve(paid["payment_method"]).last4 == "4242"
