"""A customer adds a SEPA Direct Debit account on the invitation page in Chromium, through
localstripe's Stripe.js stand-in (confirmSepaDebitSetup; it has no IBAN element, so the page
uses a plain field that belongs to no form)."""

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from cards import services
from cards.models import SepaDebitMethod
from payments import gateway
from tests.factories import CustomerFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_customer_adds_a_bank_account_and_only_the_setup_intent_reaches_us(
    live_server, page, localstripe
):
    space = SpaceFactory(name="Corner Shop", slug="corner-shop")
    customer = CustomerFactory(space=space, name="Ada Lovelace", email="ada@example.test")
    staff = StaffUserFactory(username="clerk-e", spaces=[space])
    invitation = services.card_invitation_send(customer=customer, acting_user=staff, email=False)
    path = urlsplit(services.card_invitation_url(invitation)).path
    posts = []
    page.on(
        "request",
        lambda r: (
            posts.append(r.post_data or "")
            if r.method == "POST" and r.url.startswith(live_server.url)
            else None
        ),
    )

    page.goto(f"{live_server.url}{path}")
    page.fill("#iban", "DE89 3704 0044 0532 0130 00")
    page.click("#save-iban")

    expect(page.locator("#sepa-result")).to_contain_text("DE ending in 3000 saved")
    method = SepaDebitMethod.objects.get()
    customer.refresh_from_db()
    assert (method.customer, method.last4, method.bank_code) == (customer, "3000", "37040044")
    pm = gateway.client().v1.payment_methods.retrieve(method.provider_payment_method_id)
    assert pm.type == "sepa_debit" and pm.customer == customer.provider_customer_id
    # Our server got the SetupIntent's id only, never the IBAN.
    assert any("setup_intent_id=seti_" in body for body in posts)
    assert not any("0532" in body for body in posts)

    # A malformed IBAN is refused in the page, nothing is made.
    page.fill("#iban", "not an iban")
    page.click("#save-iban")
    expect(page.locator("#sepa-result")).to_contain_text("Enter your IBAN")
    assert SepaDebitMethod.objects.count() == 1
