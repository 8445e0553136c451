"""The payment page behind a link: amount from the database; tampered, expired, replaced and
used links are refused with what the customer should do."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from billing import services as billing_services
from chargeflows import services
from chargeflows.models import ChargeFlowLevelConfiguration, ChargeFlowLevelPaymentLink
from tests.chargeflows.conftest import (
    DECLINES,
    approved_issue,
    one_level_flow,
    real_card,
    real_customer,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def link_path(space, clerk, approver, localstripe, django_capture_on_commit_callbacks):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    flow = one_level_flow(space, run_payment_link=True)
    ChargeFlowLevelConfiguration.objects.create(
        flow=flow, name="Second link", priority=2, period=timedelta(days=3), run_payment_link=True
    )
    with django_capture_on_commit_callbacks(execute=True):
        billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    link = ChargeFlowLevelPaymentLink.objects.get()
    return services.payment_link_url(link).removeprefix("http://testserver")


def test_the_page_shows_what_is_owed_from_the_database(client, link_path):
    page = client.get(link_path)
    assert page.status_code == 200
    assert page.context["issue"].amount_local in page.content.decode()


@pytest.mark.parametrize("where", [-3, 12])
def test_a_tampered_link_is_refused(client, link_path, where):
    token = link_path.split("/")[2]
    changed = token[:where] + ("A" if token[where] != "A" else "B") + token[where + 1 :]
    page = client.get(link_path.replace(token, changed))
    assert page.status_code == 404
    assert "not valid" in page.content.decode()


def test_an_expired_link_is_refused_and_says_whom_to_contact(client, link_path):
    link = ChargeFlowLevelPaymentLink.objects.get()
    with time_machine.travel(link.expires_at + timedelta(seconds=1)):
        page = client.get(link_path)
    assert page.status_code == 410
    assert "expired" in page.content.decode() and "contact Shop" in page.content.decode()


def test_a_used_link_says_already_paid(client, link_path):
    ChargeFlowLevelPaymentLink.objects.update(used_at=timezone.now())
    page = client.get(link_path)
    assert page.status_code == 410 and "already been made" in page.content.decode()


def test_a_new_levels_link_retires_the_old_one(
    client, link_path, approver, django_capture_on_commit_callbacks
):
    case = ChargeFlowLevelPaymentLink.objects.get().level.case
    with django_capture_on_commit_callbacks(execute=True):
        services.case_level_start_next_now(case=case, acting_user=approver)

    assert client.get(link_path).status_code == 410
    newer = ChargeFlowLevelPaymentLink.objects.get(retired_at__isnull=True)
    assert client.get(services.payment_link_url(newer)).status_code == 200


def _confirmed_setup_intent(client, link_path, localstripe, number):
    from tests.conftest import confirm_setup_intent

    secret = client.post(link_path + "setup-intent/").json()["client_secret"]
    confirm_setup_intent(localstripe, secret, number)
    return secret.split("_secret_")[0]


def test_paying_twice_charges_once_and_the_link_is_then_used(
    client, link_path, localstripe, django_capture_on_commit_callbacks
):
    from chargeflows.models import ChargeFlowCase
    from payments.models import ChargeAttempt

    setup_intent = _confirmed_setup_intent(client, link_path, localstripe, "4242424242424242")
    with django_capture_on_commit_callbacks(execute=True):
        paid = client.post(link_path, {"setup_intent": setup_intent})
    again = client.post(link_path, {"setup_intent": setup_intent})  # a double click

    assert paid.status_code == 200 and "payment is complete" in paid.content.decode()
    assert again.status_code == 410 and "already been made" in again.content.decode()
    link = ChargeFlowLevelPaymentLink.objects.get(retired_at__isnull=True)
    (attempt,) = ChargeAttempt.objects.filter(payment_link=link)
    intents = [
        pi
        for pi in localstripe.list("payment_intents")
        if pi["metadata"].get("charge_flow_payment_link") == str(link.pk)
    ]
    assert [pi["status"] for pi in intents] == ["succeeded"]
    assert intents[0]["amount"] == 1234  # from the database
    assert ChargeFlowCase.objects.get().state == "succeeded"


def test_a_declined_card_on_the_page_neither_advances_nor_ends_the_case(
    client, link_path, localstripe
):
    from chargeflows.models import ChargeFlowCase

    setup_intent = _confirmed_setup_intent(client, link_path, localstripe, DECLINES)
    response = client.post(link_path, {"setup_intent": setup_intent})

    assert response.status_code == 402 and "payment-error" in response.content.decode()
    case = ChargeFlowCase.objects.get()
    assert case.state == "running" and case.levels.count() == 1
    assert case.levels.get().state == "pending"


def test_a_forged_setup_intent_is_refused(client, link_path):
    response = client.post(link_path, {"setup_intent": "seti_forged"})
    assert response.status_code == 400
    assert client.post(link_path, {"setup_intent": "nonsense"}).status_code == 400


def test_a_period_ending_during_3ds_on_the_page_waits_for_the_payment(
    client, link_path, localstripe, approver, django_capture_on_commit_callbacks, settings
):
    import requests

    from chargeflows.exceptions import IllegalTransition
    from chargeflows.models import ChargeFlowCase
    from payments import gateway
    from payments.models import ChargeAttempt

    secret = client.post(link_path + "setup-intent/").json()["client_secret"]
    seti = secret.split("_secret_")[0]
    from tests.conftest import confirm_setup_intent

    confirm_setup_intent(localstripe, secret, "4000002500003155")
    # What localstripe's Stripe.js does when the customer completes its 3-D Secure box.
    requests.post(
        f"{localstripe.url}/v1/setup_intents/{seti}/confirm",
        json={"key": settings.STRIPE_PUBLISHABLE_KEY, "client_secret": secret},
        timeout=10,
    ).raise_for_status()
    waiting = client.post(link_path, {"setup_intent": seti})
    assert waiting.status_code == 200 and "data-client-secret" in waiting.content.decode()
    link = ChargeFlowLevelPaymentLink.objects.get()
    attempt = ChargeAttempt.objects.get(payment_link=link)
    assert attempt.status == "processing"
    case = ChargeFlowCase.objects.get()

    with time_machine.travel(link.expires_at + timedelta(seconds=5), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            services.flow_levels_due_dispatch()
        with pytest.raises(IllegalTransition):
            services.case_cancel(case=case, acting_user=approver)
    assert case.levels.count() == 1 and case.levels.get().state == "pending"

    # The customer completes the payment's 3-D Secure; the page posts back.
    requests.post(
        f"{localstripe.url}/v1/payment_intents/{attempt.provider_payment_intent_id}"
        "/_authenticate?success=true",
        json={
            "key": settings.STRIPE_PUBLISHABLE_KEY,
            "client_secret": gateway.payment_intent_client_secret(
                attempt.provider_payment_intent_id
            ),
        },
        timeout=10,
    ).raise_for_status()
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(link_path, {"authenticated": "1"})
    assert done.status_code == 200 and "payment is complete" in done.content.decode()
    case.refresh_from_db()
    assert case.state == "succeeded" and case.levels.count() == 1


def test_the_customer_may_keep_the_new_card_as_their_default(
    client, link_path, localstripe, django_capture_on_commit_callbacks
):
    from cards.models import CardEvent, PaymentCard
    from chargeflows.models import ChargeFlowCase

    setup_intent = _confirmed_setup_intent(client, link_path, localstripe, "5555555555554444")
    with django_capture_on_commit_callbacks(execute=True):
        paid = client.post(link_path, {"setup_intent": setup_intent, "keep_card": "on"})

    assert paid.status_code == 200
    customer = ChargeFlowCase.objects.get().issue.customer
    default = PaymentCard.objects.get(customer=customer, is_default=True)
    assert default.last4 == "4444"
    assert PaymentCard.objects.filter(customer=customer).count() == 2
    event = CardEvent.objects.get(kind=CardEvent.Kind.CARD_KEPT)
    assert event.card == default
    provider = localstripe.list("customers")
    (mine,) = [c for c in provider if c["id"] == customer.provider_customer_id]
    assert mine["invoice_settings"]["default_payment_method"] == default.provider_payment_method_id


def test_a_card_kept_on_the_payment_page_fills_recurring_lines_waiting_for_its_key(
    client, link_path, localstripe, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from cards.models import PaymentCard
    from chargeflows.models import ChargeFlowCase
    from recurring import services as recurring_services
    from spaces.roles import CLERK
    from tests.factories import StaffUserFactory

    customer = ChargeFlowCase.objects.get().issue.customer
    clerk = StaffUserFactory(role=CLERK, spaces=[customer.space])
    # localstripe reports every card as Visa; the confirmed card expires 06/34.
    line = recurring_services.recurring_line_create(
        customer=customer,
        amount_minor=4990,
        currency="EUR",
        charge_date=timezone.localdate() + timedelta(days=20),
        card=None,
        card_lookup_key=f"{customer.customer_number}-Visa-4444-06/34",
        acting_user=clerk,
    )
    assert line.card is None

    setup_intent = _confirmed_setup_intent(client, link_path, localstripe, "5555555555554444")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(link_path, {"setup_intent": setup_intent, "keep_card": "on"})

    line.refresh_from_db()
    assert line.card == PaymentCard.objects.get(customer=customer, is_default=True)


def test_pages_are_in_the_customers_language(client, link_path):
    from cards.models import Customer

    Customer.objects.update(preferred_language="de")
    page = client.get(link_path).content.decode()
    assert "Ihre Zahlung" in page and "12,34\xa0€ bezahlen" in page
    assert "12,34\xa0€ per Lastschrift bezahlen" in page

    link = ChargeFlowLevelPaymentLink.objects.get()
    with time_machine.travel(link.expires_at + timedelta(seconds=1)):
        expired = client.get(link_path).content.decode()
    assert "Dieser Zahlungslink ist abgelaufen" in expired and "an Shop" in expired


def test_an_abandoned_3ds_payment_is_failed_by_the_reconciler_and_the_case_goes_on(
    client, link_path, localstripe, settings
):
    import requests

    from chargeflows.models import ChargeFlowCase
    from payments import attempts
    from payments.models import ChargeAttempt
    from tests.conftest import confirm_setup_intent

    secret = client.post(link_path + "setup-intent/").json()["client_secret"]
    seti = secret.split("_secret_")[0]
    confirm_setup_intent(localstripe, secret, "4000002500003155")
    requests.post(
        f"{localstripe.url}/v1/setup_intents/{seti}/confirm",
        json={"key": settings.STRIPE_PUBLISHABLE_KEY, "client_secret": secret},
        timeout=10,
    ).raise_for_status()
    client.post(link_path, {"setup_intent": seti})  # the customer leaves at 3-D Secure
    attempt = ChargeAttempt.objects.get(payment_link__isnull=False)
    assert attempt.status == "processing"

    with time_machine.travel(timezone.now() + timedelta(minutes=3)):
        assert attempts.attempts_reconcile() == 1

    attempt.refresh_from_db()
    assert (attempt.status, attempt.failure_code) == ("failed", "authentication_abandoned")
    case = ChargeFlowCase.objects.get()
    assert case.state == "running" and case.levels.get().state == "pending"


# --- SEPA Direct Debit on the page --------------------------------------------------------------

GOOD_IBAN = "DE89370400440532013000"  # localstripe: the debit succeeds at once
PROCESSING_IBAN = "DE62370400440532013001"  # localstripe: processing, declined 0.5 s later


def _confirmed_sepa_setup_intent(client, link_path, localstripe, iban):
    from tests.conftest import confirm_sepa_setup_intent

    response = client.post(link_path + "sepa-setup-intent/")
    assert response.status_code == 200
    secret = response.json()["client_secret"]
    assert confirm_sepa_setup_intent(localstripe, secret, iban)["status"] == "succeeded"
    return secret.split("_secret_")[0]


def _link_intents(localstripe, link) -> list[dict]:
    return [
        pi
        for pi in localstripe.list("payment_intents")
        if pi["metadata"].get("charge_flow_payment_link") == str(link.pk)
    ]


def test_a_sepa_debit_pays_the_link_once_and_the_account_is_kept(
    client, link_path, localstripe, django_capture_on_commit_callbacks
):
    from cards.models import CardEvent, PaymentCard, SepaDebitMethod
    from chargeflows.models import ChargeFlowCase
    from payments.models import ChargeAttempt

    setup_intent = _confirmed_sepa_setup_intent(client, link_path, localstripe, GOOD_IBAN)
    with django_capture_on_commit_callbacks(execute=True):
        paid = client.post(link_path, {"setup_intent": setup_intent, "keep_card": "on"})
    again = client.post(link_path, {"setup_intent": setup_intent, "keep_card": "on"})

    assert paid.status_code == 200 and "payment is complete" in paid.content.decode()
    assert again.status_code == 410 and "already been made" in again.content.decode()
    link = ChargeFlowLevelPaymentLink.objects.get(retired_at__isnull=True)
    assert link.payment_method_type == "sepa_debit" and link.used_at is not None
    (attempt,) = ChargeAttempt.objects.filter(payment_link=link)
    (intent,) = _link_intents(localstripe, link)
    assert (intent["status"], intent["amount"]) == ("succeeded", 1234)
    assert intent["payment_method"] == attempt.provider_payment_method_id
    case = ChargeFlowCase.objects.get()
    assert case.state == "succeeded" and case.issue.state == "succeeded"
    # Kept as the customer's saved SEPA method: country, bank code and last 4, never the IBAN.
    (account,) = SepaDebitMethod.objects.filter(customer=case.issue.customer)
    assert (account.country, account.bank_code, account.last4) == ("DE", "37040044", "3000")
    assert account.provider_payment_method_id == attempt.provider_payment_method_id
    event = CardEvent.objects.get(kind=CardEvent.Kind.SEPA_DEBIT_ADDED)
    assert event.detail["via"] == f"payment link {link.pk}"
    assert PaymentCard.objects.filter(customer=case.issue.customer).count() == 1  # no new card
    assert GOOD_IBAN[4:] not in str(list(ChargeFlowLevelPaymentLink.objects.values()))


def test_a_processing_debit_shows_so_the_level_waits_and_the_reconciler_settles_it(
    client, link_path, localstripe, approver, django_capture_on_commit_callbacks
):
    from cards.models import SepaDebitMethod
    from chargeflows.exceptions import IllegalTransition
    from chargeflows.models import ChargeFlowCase
    from payments import attempts
    from payments.models import ChargeAttempt
    from tests.chargeflows.test_sepa_debit import _provider_settles

    setup_intent = _confirmed_sepa_setup_intent(client, link_path, localstripe, PROCESSING_IBAN)
    waiting = client.post(link_path, {"setup_intent": setup_intent, "keep_card": "on"})
    assert waiting.status_code == 202 and "being processed" in waiting.content.decode()
    link = ChargeFlowLevelPaymentLink.objects.get()
    attempt = ChargeAttempt.objects.get(payment_link=link)
    assert attempt.status == "processing" and link.used_at is None

    # A reload, and a second tab with another account: the same debit, nothing more.
    assert client.get(link_path).status_code == 202
    other = _confirmed_sepa_setup_intent(client, link_path, localstripe, GOOD_IBAN)
    assert client.post(link_path, {"setup_intent": other}).status_code == 202
    assert len(_link_intents(localstripe, link)) == 1
    assert ChargeAttempt.objects.filter(payment_link=link).count() == 1

    # The period ends while the bank processes: the level waits, nothing else is charged.
    case = ChargeFlowCase.objects.get()
    with time_machine.travel(link.expires_at + timedelta(seconds=5), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            services.flow_levels_due_dispatch()
        with pytest.raises(IllegalTransition):
            services.case_cancel(case=case, acting_user=approver)
        # Past its expiry the link still says the payment is being processed.
        assert client.get(link_path).status_code == 202
    assert case.levels.count() == 1 and case.levels.get().state == "pending"

    # localstripe declines this IBAN after 0.5 s; the reconciler finds it.
    _provider_settles(attempt.provider_payment_intent_id)
    with time_machine.travel(timezone.now() + timedelta(minutes=3)):
        with django_capture_on_commit_callbacks(execute=True):
            assert attempts.attempts_reconcile() == 1
    attempt.refresh_from_db()
    assert (attempt.status, attempt.failure_code) == ("failed", "card_declined")
    case.refresh_from_db()
    assert case.state == "running" and case.levels.get().state == "pending"
    assert not SepaDebitMethod.objects.exists()  # kept only once paid
    assert len(_link_intents(localstripe, link)) == 1
    with time_machine.travel(link.expires_at + timedelta(seconds=5)):
        assert client.get(link_path).status_code == 410  # settled: expired as any link


# --- Two tabs paying one link -------------------------------------------------------------------

SECOND_CARD = "5555555555554444"


def _customer_cards(localstripe, link) -> set[str]:
    """The cards attached to the link's customer at the provider."""
    customer = link.level.case.issue.provider_customer_id
    return {pm["id"] for pm in localstripe.list("payment_methods", customer=customer, type="card")}


def _method_of(setup_intent_id: str) -> str:
    from payments import gateway

    return gateway.setup_intent_retrieve(setup_intent_id).payment_method_id


def test_a_second_tab_waits_for_the_first_tabs_payment_then_shows_the_receipt(
    client, link_path, localstripe, monkeypatch, django_capture_on_commit_callbacks
):
    from django.test import Client

    from cards.models import PaymentCard
    from payments import attempts
    from payments.models import ChargeAttempt

    link = ChargeFlowLevelPaymentLink.objects.get()
    cards_before = _customer_cards(localstripe, link)
    first = _confirmed_setup_intent(client, link_path, localstripe, "4242424242424242")
    second = _confirmed_setup_intent(client, link_path, localstripe, SECOND_CARD)
    second_tab = {}

    def second_tab_submits():
        # Payments' test hook: the first tab's charge is at the provider, nothing is recorded
        # yet (its attempt is pending). The second tab submits its own card now, then reloads.
        assert ChargeAttempt.objects.get(payment_link=link).status == "pending"
        second_tab["submitted"] = client.post(
            link_path, {"setup_intent": second, "keep_card": "on"}
        )
        second_tab["reloaded"] = client.get(link_path)
        # Past the link's expiry a payment under way still shows as such (the level waits).
        with time_machine.travel(link.expires_at + timedelta(seconds=5)):
            second_tab["after_expiry"] = client.get(link_path)

    monkeypatch.setattr(attempts, "_test_pause_after_provider_call", second_tab_submits)
    with django_capture_on_commit_callbacks(execute=True):
        paid = client.post(link_path, {"setup_intent": first})
    after = client.get(link_path)  # the second tab's page reloads itself

    for waiting in second_tab.values():
        html = waiting.content.decode()
        assert waiting.status_code == 202 and "being processed" in html
        assert "did not go through" not in html and "payment-error" not in html
        assert f'http-equiv="refresh" content="3; url={link_path}"' in html
    assert paid.status_code == 200 and "payment is complete" in paid.content.decode()
    assert after.status_code == 200 and "payment is complete" in after.content.decode()
    # The receipt is for the browser that paid; the link's URL alone still says "already paid".
    elsewhere = Client().get(link_path)
    assert elsewhere.status_code == 410 and "already been made" in elsewhere.content.decode()

    (intent,) = _link_intents(localstripe, link)
    assert (intent["status"], intent["amount"]) == ("succeeded", 1234)
    assert intent["payment_method"] == _method_of(first)
    # The second tab's card was not used: not attached to the customer, not kept.
    assert _customer_cards(localstripe, link) == cards_before | {_method_of(first)}
    assert PaymentCard.objects.filter(customer=link.level.case.issue.customer).count() == 1


def test_a_second_tab_after_the_first_chose_its_card_joins_that_payment_without_attaching(
    client, link_path, localstripe, monkeypatch, django_capture_on_commit_callbacks
):
    """The first tab has attached and chosen its card and is about to begin the charge when the
    second tab's card arrives: the second tab's card is never attached, one payment is made."""
    from cards.models import PaymentCard
    from payments import attempts

    link = ChargeFlowLevelPaymentLink.objects.get()
    cards_before = _customer_cards(localstripe, link)
    first = _confirmed_setup_intent(client, link_path, localstripe, "4242424242424242")
    second = _confirmed_setup_intent(client, link_path, localstripe, SECOND_CARD)
    charge = attempts.attempt_charge
    second_tab = {}

    def first_tab_charges(**kwargs):
        # The first tab's request, its card attached and chosen, about to begin the charge:
        # the second tab submits now (its own request charges without stopping here).
        if "page" not in second_tab:
            second_tab["page"] = None
            second_tab["page"] = client.post(link_path, {"setup_intent": second, "keep_card": "on"})
        return charge(**kwargs)

    monkeypatch.setattr(attempts, "attempt_charge", first_tab_charges)
    with django_capture_on_commit_callbacks(execute=True):
        paid = client.post(link_path, {"setup_intent": first})

    assert paid.status_code == 200 and "payment is complete" in paid.content.decode()
    page = second_tab["page"]
    assert page.status_code == 200 and "payment is complete" in page.content.decode()
    (intent,) = _link_intents(localstripe, link)
    assert intent["status"] == "succeeded" and intent["payment_method"] == _method_of(first)
    assert _customer_cards(localstripe, link) == cards_before | {_method_of(first)}
    assert PaymentCard.objects.filter(customer=link.level.case.issue.customer).count() == 1


def test_a_second_tab_that_lost_the_race_after_attaching_its_card_detaches_it(
    client, link_path, localstripe, monkeypatch, django_capture_on_commit_callbacks
):
    """Both tabs found the link without a card; the second attached its card, and the first
    chose its own in that instant: the second tab's card comes off the customer again."""
    from payments import gateway

    link = ChargeFlowLevelPaymentLink.objects.get()
    cards_before = _customer_cards(localstripe, link)
    first = _method_of(_confirmed_setup_intent(client, link_path, localstripe, "4242424242424242"))
    second = _confirmed_setup_intent(client, link_path, localstripe, SECOND_CARD)
    attach = gateway.payment_method_attach

    def first_tab_chooses_meanwhile(*, payment_method_id, customer_id):
        attach(payment_method_id=payment_method_id, customer_id=customer_id)
        if payment_method_id != first:
            # The first tab's request: its card attached and chosen as the link's.
            attach(payment_method_id=first, customer_id=customer_id)
            ChargeFlowLevelPaymentLink.objects.filter(pk=link.pk).update(
                provider_payment_method_id=first, payment_method_type="card"
            )

    monkeypatch.setattr(gateway, "payment_method_attach", first_tab_chooses_meanwhile)
    with django_capture_on_commit_callbacks(execute=True):
        page = client.post(link_path, {"setup_intent": second, "keep_card": "on"})

    assert page.status_code == 200 and "payment is complete" in page.content.decode()
    (intent,) = _link_intents(localstripe, link)
    assert intent["status"] == "succeeded" and intent["payment_method"] == first
    assert _customer_cards(localstripe, link) == cards_before | {first}
    assert gateway.client().v1.payment_methods.retrieve(_method_of(second)).customer is None


def test_a_charge_whose_outcome_is_unknown_shows_being_processed_not_a_decline(
    client, link_path, localstripe, monkeypatch, settings
):
    """The provider did not answer the page's charge: it may yet have gone through (the
    reconciler finds out), so the customer is not told to try another card."""
    from payments import attempts
    from payments.models import ChargeAttempt

    setup_intent = _confirmed_setup_intent(client, link_path, localstripe, "4242424242424242")
    execute = attempts.attempt_execute

    def provider_unreachable_for_the_charge(**kwargs):
        settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # discard port: nothing listens
        return execute(**kwargs)

    monkeypatch.setattr(attempts, "attempt_execute", provider_unreachable_for_the_charge)
    page = client.post(link_path, {"setup_intent": setup_intent})

    assert ChargeAttempt.objects.get().status == "unknown"
    assert page.status_code == 202 and "being processed" in page.content.decode()
    assert "did not go through" not in page.content.decode()
