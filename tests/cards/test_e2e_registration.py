"""A customer registers a card in Chromium on the hosted page, against localstripe's Stripe.js."""

import pytest
from playwright.sync_api import expect

from cards.models import CardEvent, Customer, PaymentCard
from tests.card_data import card_numbers_in_database
from tests.factories import SpaceFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _fill_card(page, number: str, *, exp_month: str = "06", exp_year: str = "34") -> None:
    element = page.locator("#card-element")
    element.locator("input[placeholder=number]").fill(number)
    element.locator("input[placeholder=exp_month]").fill(exp_month)
    element.locator("input[placeholder=exp_year]").fill(exp_year)
    element.locator("input[placeholder=cvc]").fill("123")
    element.locator("input[placeholder=postal_code]").fill("10115")


def _provider_state(localstripe, email):
    customers = [c for c in localstripe.list("customers") if c["email"] == email]
    cards = [
        pm
        for customer in customers
        for pm in localstripe.list("payment_methods", customer=customer["id"], type="card")
    ]
    return customers, cards


def test_customer_registers_a_card_and_a_second_submission_changes_nothing(
    live_server, page, localstripe
):
    SpaceFactory(name="Corner Shop", slug="corner-shop")
    posts = []
    page.on(
        "request",
        lambda r: (
            posts.append(r.post_data)
            if r.method == "POST" and r.url.endswith("/register/corner-shop/")
            else None
        ),
    )

    page.goto(f"{live_server.url}/register/corner-shop/")
    page.fill("#id_name", "Grace Hopper")
    page.fill("#id_email", "grace@example.test")
    _fill_card(page, "4242 4242 4242 4242".replace(" ", ""))
    page.click("#save-card")

    expect(page.locator("h1")).to_contain_text("your card is saved")
    expect(page.locator("#card-summary")).to_contain_text("Visa ending in 4242")
    customer = Customer.objects.get()
    card = PaymentCard.objects.get()
    assert (customer.name, customer.email) == ("Grace Hopper", "grace@example.test")
    assert (card.brand, card.last4, card.customer) == ("Visa", "4242", customer)
    customers, cards = _provider_state(localstripe, "grace@example.test")
    assert [c["id"] for c in customers] == [customer.provider_customer_id]
    assert [pm["id"] for pm in cards] == [card.provider_payment_method_id]

    # The browser posted only our fields and the SetupIntent id, never card data.
    assert len(posts) == 1 and "setup_intent=seti_" in posts[0] and "4242" not in posts[0]
    done_url = page.url

    # Submitting the same form again (a double click, or back and resend) yields the same.
    replay = page.request.post(
        f"{live_server.url}/register/corner-shop/",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Referer": f"{live_server.url}/register/corner-shop/",
        },
        data=posts[0],
    )
    assert replay.ok and replay.url == done_url
    assert Customer.objects.count() == 1 and PaymentCard.objects.count() == 1
    assert CardEvent.objects.filter(kind=CardEvent.Kind.CARD_REGISTERED).count() == 1
    customers, cards = _provider_state(localstripe, "grace@example.test")
    assert len(customers) == 1 and len(cards) == 1

    assert card_numbers_in_database() == []


def test_a_declined_card_shows_a_clear_message_and_stores_nothing(live_server, page, localstripe):
    SpaceFactory(name="Corner Shop", slug="corner-shop")

    page.goto(f"{live_server.url}/register/corner-shop/")
    page.fill("#id_name", "Dee Clined")
    page.fill("#id_email", "dee@example.test")
    _fill_card(page, "4000000000000002")
    page.click("#save-card")

    expect(page.locator("#card-errors")).to_have_text("Your card was declined.")
    expect(page.locator("#save-card")).to_be_enabled()
    assert not Customer.objects.exists() and not PaymentCard.objects.exists()
    assert not CardEvent.objects.exists()
    assert _provider_state(localstripe, "dee@example.test") == ([], [])
    assert card_numbers_in_database() == []


def test_invited_customer_registers_a_card_once_through_the_emailed_link(
    live_server, page, localstripe, settings
):
    from cards import services
    from tests.factories import CustomerFactory

    settings.PUBLIC_BASE_URL = live_server.url
    customer = CustomerFactory(name="Ivy Invited", external_number="0283759")
    invitation = services.card_invitation_send(customer=customer, acting_user=None)
    link = services.card_invitation_url(invitation)

    page.goto(link)
    expect(page.locator("main")).to_contain_text("Ivy Invited")
    _fill_card(page, "5555555555554444")
    page.click("#save-card")

    expect(page.locator("#card-summary")).to_contain_text("ending in 4444")
    card = PaymentCard.objects.get()
    assert card.customer == customer and card.last4 == "4444"
    # localstripe reports every card as a Visa; real Stripe would say Mastercard here.
    assert card.lookup_key == "0283759-Visa-4444-06/34"
    customer.refresh_from_db()
    assert customer.provider_customer_id and customer.invitations.get().used_at is not None

    page.goto(link)
    expect(page.locator("#link-problem")).to_contain_text("already been used")
    assert card_numbers_in_database() == []


SCRIPT_ERROR_WORDS = ("Cannot read", "undefined", "TypeError", "properties of")


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("", "Enter your card number"),
        # The stand-in's change event carries no state, so the provider refuses the short
        # number; real Stripe.js reports it before (its validation_error message is shown).
        ("4242 4242", "Check the card number, expiry date and security code"),
    ],
    ids=["empty", "incomplete-number"],
)
def test_an_empty_or_incomplete_card_field_is_reported_in_words(
    live_server, page, localstripe, number, message
):
    SpaceFactory(name="Corner Shop", slug="corner-shop")
    script_errors = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))

    page.goto(f"{live_server.url}/register/corner-shop/")
    page.fill("#id_name", "Emmy Empty")
    page.fill("#id_email", "emmy@example.test")
    if number:
        _fill_card(page, number)
    page.click("#save-card")

    errors = page.locator("#card-errors")
    expect(errors).to_contain_text(message)
    text = errors.text_content()
    assert not any(word in text for word in SCRIPT_ERROR_WORDS), text
    expect(page.locator("#save-card")).to_be_enabled()
    assert page.url == f"{live_server.url}/register/corner-shop/"
    assert script_errors == []
    assert not Customer.objects.exists() and not PaymentCard.objects.exists()
    assert _provider_state(localstripe, "emmy@example.test") == ([], [])


def test_an_expired_card_is_refused_in_the_browser_and_nothing_is_saved(
    live_server, page, localstripe
):
    SpaceFactory(name="Corner Shop", slug="corner-shop")

    page.goto(f"{live_server.url}/register/corner-shop/")
    page.fill("#id_name", "Otto Old")
    page.fill("#id_email", "otto@example.test")
    _fill_card(page, "4242424242424242", exp_month="01", exp_year="20")
    page.click("#save-card")

    expect(page.locator("#registration-error")).to_contain_text("This card expired in 01/20.")
    expect(page.locator("#id_email")).to_have_value("otto@example.test")
    assert not Customer.objects.exists() and not PaymentCard.objects.exists()
    assert _provider_state(localstripe, "otto@example.test") == ([], [])
    assert card_numbers_in_database() == []
