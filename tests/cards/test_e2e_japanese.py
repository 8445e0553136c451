"""A Japanese customer registers a card in Chromium: the page, the card step's own sentences and
the "card saved" page are in Japanese because the browser asks for it."""

import pytest
from playwright.sync_api import expect

from cards.models import Customer, PaymentCard
from tests.factories import SpaceFactory

from .test_e2e_registration import _fill_card

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def japanese_page(browser):
    context = browser.new_context(locale="ja-JP")
    page = context.new_page()
    yield page
    context.close()


def test_a_customer_registers_a_card_on_the_japanese_page(live_server, japanese_page, localstripe):
    page = japanese_page
    SpaceFactory(name="Corner Shop", slug="corner-shop")
    page.goto(f"{live_server.url}/register/corner-shop/")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("h1")).to_have_text("カードを登録してください")

    # The card step's sentences come from the Japanese script catalogue.
    page.fill("#id_name", "山田 花子")
    page.fill("#id_email", "hanako@example.test")
    page.click("#save-card")
    expect(page.locator("#card-errors")).to_have_text(
        "カード番号、有効期限、セキュリティコードを入力してください。"
    )
    assert Customer.objects.count() == 0

    _fill_card(page, "4242424242424242")
    page.click("#save-card")
    expect(page.locator("h1")).to_have_text("ありがとうございます。カードが保存されました")
    expect(page.locator("#card-summary")).to_contain_text("Visa 末尾4242")
    customer = Customer.objects.get()
    assert (customer.name, customer.preferred_language) == ("山田 花子", "ja")
    assert PaymentCard.objects.get().last4 == "4242"
