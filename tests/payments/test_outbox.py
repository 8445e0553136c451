"""Outbound events through the outbox: written with the outcome, delivered by their own task
with a log of every try, retried with backoff, redelivered by staff; emails are separate."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import celery.exceptions
import pytest
import stripe
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from billing.models import ChargeIssue
from payments import attempts, outbox
from payments.models import DeliveryAttempt, OutboundEvent

pytestmark = pytest.mark.django_db
SECRET = "whsec_space_secret"


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def receiver():
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    server.received, server.status = [], 204
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(params=["single_statement", "orm"])
def hooked_space(request, space, receiver, monkeypatch, settings):
    """Both recording paths write the outbound event (PostgreSQL's statement, the ORM's)."""
    # Webhooks go only to public addresses; this test's receiver is on the loopback.
    settings.WEBHOOK_ALLOWED_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    if request.param == "orm":
        monkeypatch.setattr(attempts, "SINGLE_STATEMENT_VENDORS", set())
    space.webhook_url = f"http://127.0.0.1:{receiver.server_port}/events"
    space.webhook_secret = SECRET
    space.save()
    return space


def _charge(charge_approved, capture, **kwargs) -> ChargeIssue:
    with capture(execute=True):
        return charge_approved(**kwargs)


def test_the_outcome_writes_one_outbound_event_signed_for_the_stripe_verifier(
    hooked_space, receiver, charge_approved, django_capture_on_commit_callbacks
):
    issue = _charge(charge_approved, django_capture_on_commit_callbacks)

    event = OutboundEvent.objects.get()
    assert (event.type, event.space_id, event.delivered_at is not None) == (
        "charge_issue.succeeded",
        hooked_space.pk,
        True,
    )
    assert event.payload["data"] == {
        "id": issue.pk,
        "state": "succeeded",
        "customer": f"id:{issue.customer_id}",
        "amount_minor": 1234,
        "currency": "EUR",
        "reference": "",
        "failure_code": "",
        "failure_message": "",
        "hard_decline": False,
    }
    ((headers, body),) = receiver.received
    assert json.loads(body) == event.payload
    # The official SDK's verifier accepts our signature (format kept compatible).
    stripe.WebhookSignature.verify_header(
        body.decode(), headers["X-Backoffice-Signature"], SECRET, 300
    )
    (delivery,) = DeliveryAttempt.objects.filter(event=event)
    assert (delivery.succeeded, delivery.status_code, delivery.error) == (True, 204, "")
    assert delivery.latency_ms >= 0


def test_a_webhook_outage_is_retried_with_backoff_and_never_resends_the_email(
    hooked_space, receiver, charge_approved, django_capture_on_commit_callbacks
):
    receiver.status = 503
    issue = _charge(charge_approved, django_capture_on_commit_callbacks)
    receipts = [m for m in mail.outbox if issue.customer_email in m.to and "receipt" in m.subject]
    assert len(receipts) == 1

    event = OutboundEvent.objects.get()
    assert event.delivered_at is None and event.tries == 1
    assert event.next_try_at - timezone.now() > outbox.backoff(1) * 0.9
    assert outbox.outbound_events_sweep() == 0  # not due yet

    for _ in range(2):  # the backoff has passed: the beat sweeper tries again, still down
        OutboundEvent.objects.filter(pk=event.pk).update(next_try_at=timezone.now())
        assert outbox.outbound_events_sweep() == 1
    receiver.status = 204
    OutboundEvent.objects.filter(pk=event.pk).update(next_try_at=timezone.now())
    outbox.outbound_events_sweep()

    event.refresh_from_db()
    tries = list(DeliveryAttempt.objects.filter(event=event).order_by("pk"))
    assert [t.status_code for t in tries] == [503, 503, 503, 204]
    assert [t.succeeded for t in tries] == [False, False, False, True]
    assert all("503" in t.error for t in tries[:3])
    assert event.delivered_at is not None and len(receiver.received) == 4
    assert (
        len([m for m in mail.outbox if issue.customer_email in m.to])
        == len([m for m in mail.outbox if issue.customer_email in m.to and m not in receipts]) + 1
    )  # the notification before the charge plus the one receipt: nothing re-sent


def test_an_email_failure_never_resends_the_webhook(
    hooked_space,
    receiver,
    charge_approved,
    django_capture_on_commit_callbacks,
    settings,
    monkeypatch,
):
    # The worker dies after the provider call; the reconciler settles the attempt later.
    issue = charge_approved(crash_after_call=True, monkeypatch=monkeypatch)
    # From now on a real SMTP connection to a closed port: every email try fails (OSError).
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9

    # Tasks run eagerly here, so the email task's retries end in its exception.
    with pytest.raises((OSError, celery.exceptions.Retry)):
        with django_capture_on_commit_callbacks(execute=True):
            attempts.attempts_reconcile(older_than=timezone.timedelta(0))

    issue.refresh_from_db()
    assert issue.state == ChargeIssue.State.SUCCEEDED
    assert len(receiver.received) == 1
    assert DeliveryAttempt.objects.count() == 1
    assert OutboundEvent.objects.get().delivered_at is not None


def test_a_given_up_event_is_listed_for_staff_and_redelivered_on_request(
    hooked_space, receiver, charge_approved, client, django_capture_on_commit_callbacks
):
    receiver.status = 500
    _charge(charge_approved, django_capture_on_commit_callbacks)
    event = OutboundEvent.objects.get()
    OutboundEvent.objects.filter(pk=event.pk).update(tries=outbox.MAX_TRIES - 1)
    OutboundEvent.objects.filter(pk=event.pk).update(next_try_at=timezone.now())
    outbox.outbound_events_sweep()
    event.refresh_from_db()
    assert event.given_up and event.delivered_at is None
    assert outbox.outbound_events_sweep() == 0

    receiver.status = 204
    staff = get_user_model().objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(staff)
    listing = client.get(reverse("admin:payments_outboundevent_changelist"))
    assert listing.status_code == 200 and "charge_issue.succeeded" in listing.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:payments_outboundevent_changelist"),
            {"action": "redeliver", "_selected_action": [str(event.pk)]},
        )

    assert response.status_code == 302
    event.refresh_from_db()
    assert event.delivered_at is not None and not event.given_up
    assert DeliveryAttempt.objects.filter(event=event, succeeded=True).count() == 1
