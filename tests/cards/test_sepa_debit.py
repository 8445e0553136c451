"""A SEPA Direct Debit account saved as a customer's second method (issue 9, level step 2).

localstripe's Stripe.js stand-in has no IBAN element, only confirmSepaDebitSetup (which takes
the IBAN as a plain value). So these tests drive the page's two endpoints and confirm the
SetupIntent at localstripe the way that call does (payment_method_data of type sepa_debit):
the IBAN goes to the provider only, never to our server.
"""

from urllib.parse import urlsplit

import pytest

from cards import services
from cards.models import CardEvent, SepaDebitMethod
from payments import gateway
from tests.factories import CustomerFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

GOOD_IBAN = "DE89370400440532013000"


def confirm_sepa_in_browser(client_secret: str, iban: str = GOOD_IBAN) -> str:
    """What Stripe.js confirmSepaDebitSetup sends to the provider; returns the SetupIntent."""
    seti = client_secret.split("_secret_")[0]
    gateway.client().v1.setup_intents.confirm(
        seti,
        params={
            "client_secret": client_secret,
            "payment_method_data": {
                "type": "sepa_debit",
                "sepa_debit": {"iban": iban},
                "billing_details": {"name": "Jenny Rosen", "email": "jenny@example.com"},
            },
        },
    )
    return seti


@pytest.fixture
def invitation():
    space = SpaceFactory(slug="shop")
    customer = CustomerFactory(space=space, email="jenny@example.com")
    staff = StaffUserFactory(username="clerk-s", spaces=[space])
    return services.card_invitation_send(customer=customer, acting_user=staff, email=False)


def _page_path(invitation) -> str:
    return urlsplit(services.card_invitation_url(invitation)).path


def _add_sepa(client, invitation, iban=GOOD_IBAN):
    page = _page_path(invitation)
    response = client.post(page + "sepa/setup-intent/")
    assert response.status_code == 200
    seti = confirm_sepa_in_browser(response.json()["client_secret"], iban)
    return seti, client.post(page + "sepa/", {"setup_intent_id": seti})


def test_the_page_saves_the_account_keeping_only_ids_bank_code_and_last_4(
    client, localstripe, invitation
):
    seti, response = _add_sepa(client, invitation)

    assert response.status_code == 201
    assert response.json() == {"country": "DE", "bank_code": "37040044", "last4": "3000"}
    method = SepaDebitMethod.objects.get()
    customer = invitation.customer
    customer.refresh_from_db()
    assert (method.customer, method.setup_intent_id, method.last4) == (customer, seti, "3000")
    # Never the IBAN: no column of the row holds it.
    row = SepaDebitMethod.objects.filter(pk=method.pk).values().get()
    assert not any(GOOD_IBAN in str(value) for value in row.values())
    # Attached at the provider to the customer made for it, ready for off-session debits.
    pm = gateway.client().v1.payment_methods.retrieve(method.provider_payment_method_id)
    assert pm.type == "sepa_debit" and pm.customer == customer.provider_customer_id
    event = CardEvent.objects.get(kind=CardEvent.Kind.SEPA_DEBIT_ADDED)
    assert event.customer == customer and event.detail["last4"] == "3000"
    assert GOOD_IBAN not in str(event.detail)
    # Adding a bank account does not use up the invitation: the card can still follow.
    invitation.refresh_from_db()
    assert invitation.used_at is None


def test_a_resubmitted_setup_intent_keeps_one_account(client, localstripe, invitation):
    seti, first = _add_sepa(client, invitation)

    again = client.post(_page_path(invitation) + "sepa/", {"setup_intent_id": seti})

    assert (first.status_code, again.status_code) == (201, 201)
    assert SepaDebitMethod.objects.count() == 1
    assert CardEvent.objects.filter(kind=CardEvent.Kind.SEPA_DEBIT_ADDED).count() == 1


def test_refusals_are_clear_4xx_and_save_nothing(client, localstripe, invitation):
    page = _page_path(invitation)
    # No or a malformed SetupIntent id.
    assert client.post(page + "sepa/", {}).status_code == 400
    for awkward in ("nope", "seti_\x00", "seti_" + "a" * 300, "seti_%ff"):
        assert client.post(page + "sepa/", {"setup_intent_id": awkward}).status_code == 400
    # A SetupIntent not confirmed yet.
    secret = client.post(page + "sepa/setup-intent/").json()["client_secret"]
    unconfirmed = client.post(page + "sepa/", {"setup_intent_id": secret.split("_secret_")[0]})
    assert unconfirmed.status_code == 400
    assert unconfirmed.json()["code"] == "setup_intent_requires_payment_method"
    # A card SetupIntent of another page (the public page of the space): foreign.
    card_intent = services.registration_setup_intent_start(space=invitation.space)
    foreign = client.post(page + "sepa/", {"setup_intent_id": card_intent.id})
    assert foreign.status_code == 400 and foreign.json()["code"] == "setup_intent_foreign"
    # A tampered link.
    assert client.post(page.replace("/invite/", "/invite/x") + "sepa/").status_code in (404, 410)
    assert SepaDebitMethod.objects.count() == 0


# --- Provider events: detached / attached again --------------------------------------------------


def _provider_event(client, django_capture_on_commit_callbacks, method, event_type):
    from tests.payments.conftest import event_for, signed_post

    obj = gateway.client().v1.payment_methods.retrieve(method.provider_payment_method_id)
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, event_for(event_type, obj.to_dict()))
    assert response.status_code == 200
    method.refresh_from_db()


def test_declared_sepa_transitions_follow_the_provider_and_others_change_nothing(
    client, localstripe, invitation, django_capture_on_commit_callbacks
):
    _, added = _add_sepa(client, invitation)
    assert added.status_code == 201
    method = SepaDebitMethod.objects.get()
    customer_id = (
        gateway.client().v1.payment_methods.retrieve(method.provider_payment_method_id).customer
    )
    events = CardEvent.objects.filter(customer=invitation.customer)

    # active -> detached
    gateway.client().v1.payment_methods.detach(method.provider_payment_method_id)
    _provider_event(client, django_capture_on_commit_callbacks, method, "payment_method.detached")
    assert method.status == SepaDebitMethod.Status.DETACHED
    assert events.filter(kind=CardEvent.Kind.SEPA_DEBIT_DETACHED).count() == 1

    # detached -> detached is no transition: the same event again changes nothing.
    _provider_event(client, django_capture_on_commit_callbacks, method, "payment_method.detached")
    assert events.filter(kind=CardEvent.Kind.SEPA_DEBIT_DETACHED).count() == 1

    # detached -> active
    gateway.payment_method_attach(
        payment_method_id=method.provider_payment_method_id, customer_id=customer_id
    )
    _provider_event(client, django_capture_on_commit_callbacks, method, "payment_method.attached")
    assert method.status == SepaDebitMethod.Status.ACTIVE
    assert events.filter(kind=CardEvent.Kind.SEPA_DEBIT_ATTACHED).count() == 1

    # active -> active: refused as no transition, nothing written.
    assert not services.sepa_debit_sync_from_provider(
        payment_method_id=method.provider_payment_method_id
    )
    assert events.filter(kind=CardEvent.Kind.SEPA_DEBIT_ATTACHED).count() == 1
