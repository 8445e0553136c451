"""Provider webhooks in: localstripe's own signed deliveries, and forged, stale, replayed and
out-of-order events posted to POST /webhooks/stripe."""

import time

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from billing.models import ChargeIssue
from cards.models import CardEvent, PaymentCard
from payments import gateway, webhooks
from payments.models import ChargeAttempt, ProviderEvent
from tests.billing.conftest import payment_intents_for
from tests.payments.conftest import event_for, signed_post

State = ChargeIssue.State
Status = ChargeAttempt.Status


@pytest.fixture
def localstripe_delivers_to(localstripe):
    """Register a URL with localstripe's own webhook sender (signed with our secret)."""
    registered = []

    def register(url, events):
        requests.post(
            f"{localstripe.url}/_config/webhooks/backoffice-test",
            data={"url": url, "secret": settings.STRIPE_WEBHOOK_SECRET, "events[]": events},
            timeout=10,
        ).raise_for_status()
        registered.append(url)

    yield register
    if registered:  # stop deliveries to this test's server
        requests.post(
            f"{localstripe.url}/_config/webhooks/backoffice-test",
            data={"url": "http://127.0.0.1:9/", "secret": "x", "events[]": ["never.sent"]},
            timeout=10,
        ).raise_for_status()


def _wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.django_db(transaction=True)
def test_localstripes_signed_delivery_settles_an_attempt_whose_worker_died(
    live_server, localstripe, localstripe_delivers_to, charge_approved, monkeypatch
):
    localstripe_delivers_to(f"{live_server.url}/webhooks/stripe", ["payment_intent.succeeded"])

    issue = charge_approved(crash_after_call=True, monkeypatch=monkeypatch)
    assert issue.state == State.CHARGING and issue.attempt.status == Status.PENDING

    # localstripe sends payment_intent.succeeded about a second after the charge.
    assert _wait_for(lambda: ChargeIssue.objects.get(pk=issue.pk).state == State.SUCCEEDED)
    attempt = ChargeAttempt.objects.get(charge_issue=issue)
    # (localstripe also delivers the events of earlier tests' charges: not ours, ignored.)
    event = ProviderEvent.objects.get(
        type="payment_intent.succeeded",
        payload__data__object__id=attempt.provider_payment_intent_id,
    )
    assert event.processed_at is not None and event.tries == 1
    intents = payment_intents_for(localstripe, issue)
    assert attempt.status == Status.SUCCEEDED
    assert len(intents) == 1 and attempt.provider_payment_intent_id == intents[0]["id"]
    # The reconciler later finds nothing left to do: no second charge.
    from payments import attempts

    assert attempts.attempts_reconcile(older_than=timezone.timedelta(0)) == 0
    assert len(payment_intents_for(localstripe, issue)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("secret", "age", "header"),
    [
        ("whsec_forged", 0, True),  # forged: signed with another secret
        (None, 301, True),  # stale: older than the 300 s tolerance
        (None, 0, False),  # no signature at all
    ],
)
def test_forged_stale_or_unsigned_events_get_400_and_nothing_is_stored(client, secret, age, header):
    event = event_for("payment_intent.succeeded", {"id": "pi_forged", "metadata": {}})
    if header:
        response = signed_post(client, event, secret=secret, age=age)
    else:
        response = client.post("/webhooks/stripe", data=event, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "bad_signature"
    assert not ProviderEvent.objects.exists()


@pytest.mark.django_db
def test_bad_bodies_get_400_never_500(client):
    from payments import outbox

    for body in (b"not json", b"[1, 2]", b'{"type": "x"}'):
        t = int(time.time())
        response = client.post(
            "/webhooks/stripe",
            data=body,
            content_type="application/json",
            headers={
                "Stripe-Signature": outbox.webhook_signature(
                    settings.STRIPE_WEBHOOK_SECRET, t, body
                )
            },
        )
        assert response.status_code == 400, body
    assert client.get("/webhooks/stripe").status_code == 405
    assert not ProviderEvent.objects.exists()


@pytest.mark.django_db
def test_a_replayed_event_is_acknowledged_and_not_processed_again(
    client, post_event, charge_approved, monkeypatch, localstripe
):
    issue = charge_approved(crash_after_call=True, monkeypatch=monkeypatch)
    (intent,) = payment_intents_for(localstripe, issue)
    event = event_for("payment_intent.succeeded", intent, event_id="evt_replayed")

    first = post_event(event)
    again = post_event(event)

    assert (first.status_code, first.json()["replay"]) == (200, False)
    assert (again.status_code, again.json()["replay"]) == (200, True)
    stored = ProviderEvent.objects.get()
    assert stored.processed_at is not None and stored.tries == 1
    issue.refresh_from_db()
    assert issue.state == State.SUCCEEDED
    assert list(
        issue.events.filter(action="charge_succeeded").values_list("action", flat=True)
    ) == ["charge_succeeded"]


@pytest.mark.django_db
@pytest.mark.parametrize("order", [("processing", "succeeded"), ("succeeded", "processing")])
def test_events_in_any_order_end_in_the_same_state(
    client, post_event, charge_approved, monkeypatch, localstripe, order
):
    issue = charge_approved(crash_after_call=True, monkeypatch=monkeypatch)
    (intent,) = payment_intents_for(localstripe, issue)
    processing = {**intent, "status": "processing"}
    events = {
        "processing": event_for("payment_intent.processing", processing),
        "succeeded": event_for("payment_intent.succeeded", intent),
    }

    for name in order:
        assert post_event(events[name]).status_code == 200

    issue.refresh_from_db()
    attempt = ChargeAttempt.objects.get(charge_issue=issue)
    assert (issue.state, attempt.status) == (State.SUCCEEDED, Status.SUCCEEDED)
    assert issue.events.filter(action="charge_succeeded").count() == 1
    assert ProviderEvent.objects.filter(processed_at__isnull=False).count() == 2


@pytest.mark.django_db
def test_a_processing_attempt_waits_and_is_settled_by_a_later_failure_event(
    client, post_event, charge_approved, monkeypatch, localstripe
):
    issue = charge_approved(crash_after_call=True, monkeypatch=monkeypatch)
    (intent,) = payment_intents_for(localstripe, issue)

    post_event(event_for("payment_intent.processing", {**intent, "status": "processing"}))
    issue.refresh_from_db()
    assert (issue.state, issue.attempt.status) == (State.CHARGING, Status.PROCESSING)

    failed = {
        **intent,
        "status": "requires_payment_method",
        "last_payment_error": {
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    }
    post_event(event_for("payment_intent.payment_failed", failed))

    issue.refresh_from_db()
    assert issue.attempt.status == Status.FAILED
    assert issue.events.get(action="charge_failed").to_state == State.COLLECTING
    assert issue.failure_code == "insufficient_funds" and not issue.hard_decline


@pytest.mark.django_db
def test_card_updater_and_detach_events_update_the_card_with_an_audit_event(
    client, post_event, space, register_card, localstripe
):
    registration = register_card(space)
    card = registration.card
    sdk = gateway.client().v1
    method = sdk.payment_methods.retrieve(card.provider_payment_method_id).to_dict()
    # The provider's card updater gave the card a new expiry.
    sdk.payment_methods.update(
        card.provider_payment_method_id,
        params={"card": {**method["card"], "exp_month": 9, "exp_year": 2037}},
    )
    updated = sdk.payment_methods.retrieve(card.provider_payment_method_id).to_dict()

    response = post_event(event_for("payment_method.automatically_updated", updated))

    assert response.status_code == 200
    card.refresh_from_db()
    assert (card.exp_month, card.exp_year, card.status) == (9, 2037, PaymentCard.Status.ACTIVE)
    change = CardEvent.objects.get(card=card, kind=CardEvent.Kind.CARD_UPDATED)
    assert (
        change.detail["before"]["exp_year"] == 2034 and change.detail["after"]["exp_year"] == 2037
    )

    sdk.payment_methods.detach(card.provider_payment_method_id)
    # An older "updated" event arriving after the detach changes nothing back: the card is
    # read from the provider, so the end state is the provider's whatever the order.
    signed_post(
        client, event_for("payment_method.detached", {"id": card.provider_payment_method_id})
    )
    post_event(event_for("payment_method.updated", updated))

    card.refresh_from_db()
    assert card.status == PaymentCard.Status.DETACHED
    assert CardEvent.objects.filter(card=card, kind=CardEvent.Kind.CARD_DETACHED).count() == 1


@pytest.mark.django_db
def test_failing_processing_backs_off_gives_up_and_staff_can_process_again(
    client, post_event, space, localstripe, django_capture_on_commit_callbacks
):
    from tests.factories import CustomerFactory, PaymentCardFactory

    card = PaymentCardFactory(
        customer=CustomerFactory(space=space), provider_payment_method_id="pm_gone_at_provider"
    )
    response = post_event(
        event_for("payment_method.updated", {"id": card.provider_payment_method_id})
    )
    assert response.status_code == 200  # acknowledged at once, whatever processing does

    event = ProviderEvent.objects.get()
    assert event.processed_at is None and event.tries == 1 and event.last_error
    assert event.next_try_at > timezone.now() and not event.given_up
    assert webhooks.provider_events_retry() == 0  # not due yet: backoff

    for _ in range(webhooks.MAX_TRIES - 1):
        ProviderEvent.objects.filter(pk=event.pk).update(next_try_at=timezone.now())
        webhooks.provider_events_retry()
    event.refresh_from_db()
    assert event.given_up and event.tries == webhooks.MAX_TRIES
    assert webhooks.provider_events_retry() == 0  # given up: only staff try again

    admin_user = get_user_model().objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:payments_providerevent_changelist"),
            {"action": "process_again", "_selected_action": [event.pk]},
        )
    assert response.status_code == 302
    event.refresh_from_db()
    assert event.tries == webhooks.MAX_TRIES + 1  # tried again at once (and failed again)
