"""Three languages for customers: hosted pages, their scripts' sentences, amounts and emails in
English, German and Japanese, by the customer's language or the browser's."""

import polib
import pytest
from django.conf import settings
from django.core import mail
from django.utils import translation

from billing.models import ChargeIssue
from billing.notifications import customer_outcome_send
from cards.services import card_invitation_send, card_invitation_url
from core.money import format_money_local
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory

pytestmark = pytest.mark.django_db

LANGUAGES = [code for code, _ in settings.LANGUAGES if code != "en"]


@pytest.mark.parametrize(
    ("accept", "heading", "lang"),
    [
        ("en-US,en;q=0.9", "Register your card", "en"),
        ("de-DE,de;q=0.9", "Hinterlegen Sie Ihre Karte", "de"),
        ("ja-JP,ja;q=0.9", "カードを登録してください", "ja"),
    ],
)
def test_the_public_page_speaks_the_browsers_language(client, accept, heading, lang):
    SpaceFactory(slug="corner-shop")
    response = client.get("/register/corner-shop/", HTTP_ACCEPT_LANGUAGE=accept)
    html = response.content.decode()
    assert response.status_code == 200
    assert f'<html lang="{lang}">' in html
    assert heading in html
    # The page's script sentences come in the same language.
    assert f"/jsi18n/{lang}/" in html


def test_the_cached_public_page_is_kept_per_language(client):
    SpaceFactory(slug="corner-shop")
    first = client.get("/register/corner-shop/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    second = client.get("/register/corner-shop/", HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert "カードを保存" in first and "Karte speichern" in second
    assert "カードを保存" not in second


def test_an_invitation_page_is_in_the_customers_language_whatever_the_browser(client):
    customer = CustomerFactory(preferred_language="ja")
    invitation = card_invitation_send(customer=customer, acting_user=None, email=False)
    url = card_invitation_url(invitation).removeprefix(settings.PUBLIC_BASE_URL.rstrip("/"))
    html = client.get(url, HTTP_ACCEPT_LANGUAGE="en-US").content.decode()
    assert '<html lang="ja">' in html
    assert f"<strong>{customer.name}</strong> 様" in html
    assert "/jsi18n/ja/" in html


@pytest.mark.parametrize(
    ("lang", "sentence"),
    [("de", "Ihre Karte wurde abgelehnt."), ("ja", "カードが承認されませんでした。")],
)
def test_the_script_catalogue_is_served_per_language(client, lang, sentence):
    response = client.get(f"/jsi18n/{lang}/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert sentence.encode("unicode_escape").decode() in response.content.decode() or (
        sentence in response.content.decode()
    )


def test_an_unknown_language_catalogue_is_a_404(client):
    assert client.get("/jsi18n/xx/").status_code == 404


@pytest.mark.parametrize(
    ("minor", "currency", "lang", "shown"),
    [
        (4990, "EUR", "en", "€49.90"),
        (4990, "EUR", "de", "49,90\xa0€"),
        (123450, "EUR", "de", "1.234,50\xa0€"),
        (4990, "JPY", "ja", "￥4,990"),
        (4990, "JPY", "en", "¥4,990"),
        (4990, "USD", "ja", "$49.90"),
    ],
)
def test_amounts_are_written_as_the_customers_locale_writes_them(minor, currency, lang, shown):
    assert format_money_local(minor, currency, lang) == shown
    with translation.override(lang):
        assert format_money_local(minor, currency) == shown


def test_an_amount_is_never_rounded_for_display():
    # IQD has three decimals in ISO 4217 (our minor units); CLDR would show none.
    assert format_money_local(1500, "IQD", "en").endswith("1.5")


@pytest.mark.parametrize(
    ("lang", "subject_part", "body_part"),
    [
        ("en", "receipt for €49.90", "We charged €49.90"),
        ("de", "Beleg über 49,90\xa0€", "Wir haben 49,90\xa0€"),
        ("ja", "￥4,990の領収書", "￥4,990をご請求いたしました"),
    ],
)
def test_the_receipt_is_in_the_customers_language_with_a_local_amount(
    lang, subject_part, body_part
):
    space = SpaceFactory(name="Corner Shop")
    customer = CustomerFactory(space=space, preferred_language=lang)
    card = PaymentCardFactory(customer=customer)
    currency, minor = ("JPY", 4990) if lang == "ja" else ("EUR", 4990)
    issue = ChargeIssue.objects.create(
        space=space,
        customer=customer,
        card=card,
        source=ChargeIssue.Source.STAFF,
        customer_name=customer.name,
        customer_email=customer.email,
        provider_customer_id="cus_test",
        card_last4=card.last4,
        amount_minor=minor,
        currency=currency,
        state=ChargeIssue.State.SUCCEEDED,
    )
    customer_outcome_send(issue_id=issue.pk)
    (message,) = mail.outbox
    # A subject is one line of plain spaces (the no-break space folded too).
    assert " ".join(subject_part.split()) in message.subject
    assert body_part in message.body
    html = message.alternatives[0][0]
    assert body_part in html


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_every_catalogued_sentence_is_translated(lang, domain):
    """A sentence added to a page or email without its German and Japanese wording would
    reach those customers in English: `makemessages` then fill the catalogues."""
    po = polib.pofile(str(settings.BASE_DIR / "locale" / lang / "LC_MESSAGES" / f"{domain}.po"))
    untranslated = [entry.msgid for entry in po if not entry.translated() or "fuzzy" in entry.flags]
    assert untranslated == []
