import threading
from datetime import date, timedelta

import pytest
import stripe
from django.core import mail
from django.db import connection
from django.utils import timezone

from cards import services
from cards.exceptions import (
    InvitationExpired,
    InvitationInvalid,
    InvitationUsed,
    ProviderUnavailable,
    RegistrationRefused,
)
from cards.models import CardEvent, CardRegistration, Customer, PaymentCard, normalise_brand
from cards.signals import card_registered
from payments import gateway
from spaces.roles import CLERK
from tests.conftest import confirm_setup_intent
from tests.factories import CustomerFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

VISA = "4242424242424242"
DECLINED_AT_SETUP = "4000000000000002"


def _confirmed_intent(localstripe, space, number=VISA, invitation=None):
    intent = services.registration_setup_intent_start(space=space, invitation=invitation)
    answer = confirm_setup_intent(localstripe, intent.client_secret, number)
    return intent.id, answer


def _provider_cards(localstripe, customer_id):
    return localstripe.list("payment_methods", customer=customer_id, type="card")


def test_registration_creates_customer_and_default_card_with_safe_details_only(
    localstripe, django_capture_on_commit_callbacks
):
    space = SpaceFactory()
    seti, answer = _confirmed_intent(localstripe, space)
    assert answer["status"] == "succeeded"
    received = []
    card_registered.connect(lambda sender, event, **kw: received.append(event.pk), weak=False)

    with django_capture_on_commit_callbacks(execute=True):
        registration = services.card_registration_complete(
            space=space,
            setup_intent_id=seti,
            name="Ada Lovelace",
            email="ada@example.test",
            language="de-CH",
        )

    customer = Customer.objects.get()
    card = PaymentCard.objects.get()
    assert registration.customer == customer and registration.card == card
    assert (customer.name, customer.email, customer.preferred_language) == (
        "Ada Lovelace",
        "ada@example.test",
        "de",
    )
    assert customer.provider_customer_id.startswith("cus_")
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("Visa", "4242", 6, 2034)
    assert card.is_default and card.status == PaymentCard.Status.ACTIVE and card.fingerprint
    assert card.provider_payment_method_id == answer["payment_method"]
    provider_cards = _provider_cards(localstripe, customer.provider_customer_id)
    assert [pm["id"] for pm in provider_cards] == [card.provider_payment_method_id]
    provider_customer = next(
        c for c in localstripe.list("customers") if c["id"] == customer.provider_customer_id
    )
    assert (
        provider_customer["invoice_settings"]["default_payment_method"]
        == card.provider_payment_method_id
    )
    event = CardEvent.objects.get(kind=CardEvent.Kind.CARD_REGISTERED)
    assert event.card == card and event.dispatched_at is not None
    assert event.detail["lookup_key"] == f"{customer.pk}-Visa-4242-06/34"
    assert received == [event.pk]


def test_resubmitting_the_same_setup_intent_yields_the_first_registration(localstripe):
    space = SpaceFactory()
    seti, _ = _confirmed_intent(localstripe, space)
    customers_before = len(localstripe.list("customers"))

    first = services.card_registration_complete(
        space=space, setup_intent_id=seti, name="Bo", email="bo@example.test"
    )
    second = services.card_registration_complete(
        space=space, setup_intent_id=seti, name="Bo", email="bo@example.test"
    )

    assert first.pk == second.pk
    assert Customer.objects.count() == 1 and PaymentCard.objects.count() == 1
    assert len(localstripe.list("customers")) == customers_before + 1
    assert len(_provider_cards(localstripe, first.customer.provider_customer_id)) == 1


def test_a_crash_after_the_provider_customer_was_made_is_retried_without_a_second(
    localstripe, monkeypatch
):
    space = SpaceFactory()
    seti, _ = _confirmed_intent(localstripe, space)
    customers_before = len(localstripe.list("customers"))
    real = gateway.customer_set_default_payment_method
    calls = []

    def timeout_once(**kwargs):
        # Fault injection: the network fails after the provider created customer and card.
        calls.append(kwargs)
        if len(calls) == 1:
            raise stripe.APIConnectionError("injected timeout")
        return real(**kwargs)

    monkeypatch.setattr(gateway, "customer_set_default_payment_method", timeout_once)

    with pytest.raises(ProviderUnavailable):
        services.card_registration_complete(
            space=space, setup_intent_id=seti, name="Cy", email="cy@example.test"
        )
    assert not Customer.objects.exists() and not CardRegistration.objects.exists()
    assert len(localstripe.list("customers")) == customers_before + 1

    registration = services.card_registration_complete(
        space=space, setup_intent_id=seti, name="Cy", email="cy@example.test"
    )

    assert len(localstripe.list("customers")) == customers_before + 1
    assert len(_provider_cards(localstripe, registration.customer.provider_customer_id)) == 1
    assert PaymentCard.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_submissions_make_one_customer_and_one_card(localstripe):
    space = SpaceFactory()
    seti, _ = _confirmed_intent(localstripe, space)
    customers_before = len(localstripe.list("customers"))
    results, errors = [], []
    barrier = threading.Barrier(2)

    def submit():
        try:
            barrier.wait()
            results.append(
                services.card_registration_complete(
                    space=space, setup_intent_id=seti, name="Di", email="di@example.test"
                ).pk
            )
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [] and len(set(results)) == 1
    assert CardRegistration.objects.count() == 1 and PaymentCard.objects.count() == 1
    assert len(localstripe.list("customers")) == customers_before + 1


def test_a_declined_card_is_refused_and_nothing_is_stored(localstripe):
    space = SpaceFactory()
    seti, answer = _confirmed_intent(localstripe, space, number=DECLINED_AT_SETUP)
    assert answer["error"]["code"] == "card_declined"

    with pytest.raises(RegistrationRefused) as refused:
        services.card_registration_complete(
            space=space, setup_intent_id=seti, name="Ed", email="ed@example.test"
        )

    assert "could not be saved" in refused.value.message
    assert not Customer.objects.exists() and not PaymentCard.objects.exists()
    assert not CardRegistration.objects.exists() and not CardEvent.objects.exists()


def test_a_setup_intent_made_for_another_space_is_refused(localstripe):
    ours, theirs = SpaceFactory(), SpaceFactory()
    seti, _ = _confirmed_intent(localstripe, theirs)

    with pytest.raises(RegistrationRefused):
        services.card_registration_complete(
            space=ours, setup_intent_id=seti, name="Fe", email="fe@example.test"
        )
    with pytest.raises(RegistrationRefused):
        services.card_registration_complete(
            space=ours, setup_intent_id="seti_doesnotexist", name="Fe", email="fe@example.test"
        )
    assert not Customer.objects.exists()


def test_an_unconfirmed_setup_intent_is_refused(localstripe):
    space = SpaceFactory()
    intent = services.registration_setup_intent_start(space=space)

    with pytest.raises(RegistrationRefused):
        services.card_registration_complete(
            space=space, setup_intent_id=intent.id, name="Gu", email="gu@example.test"
        )


def test_invitation_email_link_registers_a_card_for_the_known_customer_once(
    localstripe, django_capture_on_commit_callbacks
):
    customer = CustomerFactory(external_number="0283759", preferred_language="de")
    clerk = StaffUserFactory(role=CLERK, spaces=[customer.space])

    with django_capture_on_commit_callbacks(execute=True):
        invitation = services.card_invitation_send(customer=customer, acting_user=clerk)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [customer.email]
    url = services.card_invitation_url(invitation)
    assert url in message.body and url in message.alternatives[0][0]
    assert CardEvent.objects.get(kind=CardEvent.Kind.INVITATION_SENT).acting_user == clerk
    token = url.rstrip("/").split("/")[-1]
    assert services.card_invitation_check(public_id=invitation.public_id, token=token) == invitation

    seti, _ = _confirmed_intent(localstripe, customer.space, invitation=invitation)
    registration = services.card_registration_complete(
        space=customer.space, setup_intent_id=seti, invitation=invitation
    )

    assert registration.customer == customer and registration.invitation == invitation
    assert registration.card.lookup_key == "0283759-Visa-4242-06/34"
    with pytest.raises(InvitationUsed):
        services.card_invitation_check(public_id=invitation.public_id, token=token)


def test_expired_and_tampered_invitation_links_are_refused():
    customer = CustomerFactory()
    invitation = services.card_invitation_send(customer=customer, acting_user=None)
    url = services.card_invitation_url(invitation)
    token = url.rstrip("/").split("/")[-1]

    with pytest.raises(InvitationInvalid):
        services.card_invitation_check(public_id=invitation.public_id, token=token[:-1] + "x")
    with pytest.raises(InvitationInvalid):
        services.card_invitation_check(public_id=None, token=token)

    invitation.expires_at = timezone.now() - timedelta(seconds=1)
    invitation.save()
    # Changing the expiry invalidates the old token (it is part of the signed state).
    with pytest.raises(InvitationInvalid):
        services.card_invitation_check(public_id=invitation.public_id, token=token)
    fresh_token = services.card_invitation_url(invitation).rstrip("/").split("/")[-1]
    with pytest.raises(InvitationExpired):
        services.card_invitation_check(public_id=invitation.public_id, token=fresh_token)


def test_a_registration_through_an_expired_invitation_setup_intent_is_refused(localstripe):
    customer = CustomerFactory()
    invitation = services.card_invitation_send(customer=customer, acting_user=None)
    seti, _ = _confirmed_intent(localstripe, customer.space, invitation=invitation)

    # A public-page submission cannot use a SetupIntent made for an invitation.
    with pytest.raises(RegistrationRefused):
        services.card_registration_complete(
            space=customer.space, setup_intent_id=seti, name="X", email="x@example.test"
        )


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("visa", "Visa"),
        ("mastercard", "Mastercard"),
        ("amex", "American Express"),
        ("diners", "Diners Club"),
        ("jcb", "JCB"),
        ("some_new_brand", "Some New Brand"),
    ],
)
def test_brands_are_normalised(code, name):
    assert normalise_brand(code) == name


def test_lookup_key_has_seed_003_format():
    customer = CustomerFactory(external_number="0283759")
    card = PaymentCard.objects.create(
        space=customer.space,
        customer=customer,
        provider_payment_method_id="pm_x",
        brand=normalise_brand("mastercard"),
        last4="4242",
        exp_month=6,
        exp_year=2025,
    )

    assert card.lookup_key == "0283759-Mastercard-4242-06/25"


def test_card_event_is_dispatched_once():
    customer = CustomerFactory()
    event = CardEvent.objects.create(
        space=customer.space, customer=customer, kind=CardEvent.Kind.CARD_REGISTERED
    )
    received = []
    card_registered.connect(lambda sender, event, **kw: received.append(event.pk), weak=False)

    assert services.card_event_dispatch(event_id=event.pk) is True
    assert services.card_event_dispatch(event_id=event.pk) is False
    assert received == [event.pk]


def test_lost_dispatches_are_swept_up():
    customer = CustomerFactory()
    old = CardEvent.objects.create(
        space=customer.space, customer=customer, kind=CardEvent.Kind.CARD_REGISTERED
    )
    CardEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    recent = CardEvent.objects.create(
        space=customer.space, customer=customer, kind=CardEvent.Kind.CARD_REGISTERED
    )

    assert services.card_events_redispatch() == 1  # eager in tests: dispatched inline

    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.dispatched_at is not None and recent.dispatched_at is None


def test_cards_past_their_expiry_month_are_marked_expired():
    customer = CustomerFactory()
    make = lambda month, year, pm: PaymentCard.objects.create(  # noqa: E731
        space=customer.space,
        customer=customer,
        provider_payment_method_id=pm,
        brand="Visa",
        last4="4242",
        exp_month=month,
        exp_year=year,
    )
    past, current = make(10, 2026, "pm_past"), make(11, 2026, "pm_current")

    assert services.payment_cards_expire(today=date(2026, 11, 22)) == 1

    past.refresh_from_db()
    current.refresh_from_db()
    assert past.status == PaymentCard.Status.EXPIRED
    assert current.status == PaymentCard.Status.ACTIVE
    assert CardEvent.objects.filter(kind=CardEvent.Kind.CARD_EXPIRED, card=past).exists()


# --- A SetupIntent completes only the page it was made for (issue 7 §5) ----------------------


def _invited(space, name):
    customer = CustomerFactory(space=space, name=name, email=f"{name.lower()}@example.test")
    return services.card_invitation_send(customer=customer, acting_user=None)


def test_a_setup_intent_registered_through_one_invitation_completes_no_other_page(localstripe):
    space = SpaceFactory()
    invitation_a, invitation_b = _invited(space, "Anna"), _invited(space, "Bert")
    seti, _ = _confirmed_intent(localstripe, space, invitation=invitation_a)
    first = services.card_registration_complete(
        space=space, setup_intent_id=seti, invitation=invitation_a
    )
    invitation_b.refresh_from_db()
    provider_customers = len(localstripe.list("customers"))

    with pytest.raises(RegistrationRefused) as to_b:
        services.card_registration_complete(
            space=space, setup_intent_id=seti, invitation=invitation_b
        )
    with pytest.raises(RegistrationRefused) as to_public:
        services.card_registration_complete(
            space=space, setup_intent_id=seti, name="Mallory", email="anna@example.test"
        )

    assert to_b.value.code == "setup_intent_other_invitation"
    assert to_public.value.code == "setup_intent_other_invitation"
    assert "another registration page" in to_b.value.message
    invitation_b.refresh_from_db()
    assert invitation_b.used_at is None and not invitation_b.customer.cards.exists()
    assert list(CardRegistration.objects.values_list("pk", flat=True)) == [first.pk]
    assert PaymentCard.objects.count() == 1 and Customer.objects.count() == 2
    assert len(localstripe.list("customers")) == provider_customers


def test_a_public_registration_is_replayed_only_for_the_same_customer(localstripe):
    space = SpaceFactory()
    seti, _ = _confirmed_intent(localstripe, space)
    first = services.card_registration_complete(
        space=space, setup_intent_id=seti, name="Bo", email="bo@example.test"
    )
    assert first.is_new is True

    replay = services.card_registration_complete(
        space=space, setup_intent_id=seti, name="Bo", email="BO@example.test"
    )
    with pytest.raises(RegistrationRefused) as other:
        services.card_registration_complete(
            space=space, setup_intent_id=seti, name="Eve", email="eve@example.test"
        )
    invitation = _invited(space, "Cleo")
    with pytest.raises(RegistrationRefused) as to_invitation:
        services.card_registration_complete(
            space=space, setup_intent_id=seti, invitation=invitation
        )

    assert replay.pk == first.pk and replay.is_new is False
    assert other.value.code == "setup_intent_other_customer"
    assert to_invitation.value.code == "setup_intent_other_invitation"
    assert Customer.objects.filter(email="eve@example.test").count() == 0
    assert PaymentCard.objects.count() == 1


def test_a_setup_intent_made_for_one_invitation_is_refused_by_another(localstripe):
    space = SpaceFactory()
    invitation_a, invitation_b = _invited(space, "Dora"), _invited(space, "Egon")
    seti, _ = _confirmed_intent(localstripe, space, invitation=invitation_a)
    provider_customers = len(localstripe.list("customers"))

    with pytest.raises(RegistrationRefused) as refused:
        services.card_registration_complete(
            space=space, setup_intent_id=seti, invitation=invitation_b
        )

    assert refused.value.code == "setup_intent_foreign"
    assert not CardRegistration.objects.exists() and not PaymentCard.objects.exists()
    assert len(localstripe.list("customers")) == provider_customers
    # The page it was made for still completes it.
    registration = services.card_registration_complete(
        space=space, setup_intent_id=seti, invitation=invitation_a
    )
    assert registration.customer == invitation_a.customer


# --- An expired card is refused before it is saved (issue 7 §5) ------------------------------


def test_an_expired_card_is_refused_and_nothing_is_made_for_it(localstripe):
    space = SpaceFactory()
    intent = services.registration_setup_intent_start(space=space)
    answer = confirm_setup_intent(localstripe, intent.client_secret, VISA, exp_month=1, exp_year=20)
    assert answer["status"] == "succeeded"  # the stand-in accepts it; real Stripe would not
    provider_customers = len(localstripe.list("customers"))

    with pytest.raises(RegistrationRefused) as refused:
        services.card_registration_complete(
            space=space, setup_intent_id=intent.id, name="Old", email="old@example.test"
        )

    assert refused.value.code == "card_expired"
    assert refused.value.message.startswith("This card expired in 01/20.")
    assert not Customer.objects.exists() and not PaymentCard.objects.exists()
    assert not CardRegistration.objects.exists() and not CardEvent.objects.exists()
    assert len(localstripe.list("customers")) == provider_customers
    payment_method = gateway.payment_method_retrieve(answer["payment_method"])
    assert payment_method.customer_id is None  # never attached to anyone


def test_a_card_expiring_this_month_is_still_accepted(localstripe):
    space = SpaceFactory()
    today = timezone.localdate()
    intent = services.registration_setup_intent_start(space=space)
    confirm_setup_intent(
        localstripe, intent.client_secret, VISA, exp_month=today.month, exp_year=today.year
    )

    registration = services.card_registration_complete(
        space=space, setup_intent_id=intent.id, name="Now", email="now@example.test"
    )

    assert (registration.card.exp_month, registration.card.exp_year) == (today.month, today.year)
