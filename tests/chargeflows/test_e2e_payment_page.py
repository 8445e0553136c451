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
    expect(page.locator("#amount")).to_have_text("12.34 EUR")

    _fill_card(page, number)
    page.click("#pay")
    if number.endswith("3155"):
        # localstripe's Stripe.js shows its 3-D Secure box for a card that asks for it: when
        # the card is confirmed, and again for the payment (back from our server, which
        # holds the link's one PaymentIntent in requires_action meanwhile).
        page.get_by_role("button", name="Complete authentication").click()
        page.get_by_role("button", name="Complete authentication").click()

    expect(page.locator("h1")).to_contain_text("your payment is complete")
    expect(page.locator("#paid-amount")).to_have_text("12.34 EUR")
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
