"""The space's webhook: a signed JSON event after a charge succeeds or fails, received by a real
HTTP server on the loopback interface."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from billing import services
from billing.models import ChargeIssue
from payments import outbox
from tests.billing.conftest import DECLINES_ON_CHARGE, VISA

pytestmark = pytest.mark.django_db

SECRET = "whsec_test_space_secret"


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def receiver():
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def hooked_space(space, receiver, settings):
    # The receiver listens on the loopback, which only this explicit setting lets a webhook
    # reach (tests/billing/test_webhook_urls.py shows it is refused by default).
    settings.WEBHOOK_ALLOWED_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    space.webhook_url = f"http://127.0.0.1:{receiver.server_port}/backoffice-events"
    space.webhook_secret = SECRET
    space.save()
    return space


def _charge(space, *, number, clerk, approver, register_card, capture) -> ChargeIssue:
    """A registered card's issue through amount entry and approval; the approval's tasks (charge,
    then outcome notification) run eagerly on commit."""
    registration = register_card(space, number=number)
    issue = ChargeIssue.objects.get(customer=registration.customer)
    services.charge_amount_enter(
        issue=issue,
        acting_user=clerk,
        amount="12.34",
        currency="EUR",
        notification_subject="Your order",
        notification_body="We charge your card on file.",
    )
    with capture(execute=True):
        services.charge_issue_approve(issue=issue, acting_user=approver)
    issue.refresh_from_db()
    return issue


def _the_one_event(receiver, started: int):
    (request,) = receiver.received
    return _verified(request, started)


def _verified(request, started: int):
    path, headers, body = request
    assert path == "/backoffice-events"
    assert headers["Content-Type"] == "application/json"
    signature = headers["X-Backoffice-Signature"]
    timestamp = int(dict(part.split("=", 1) for part in signature.split(","))["t"])
    assert started <= timestamp <= time.time() + 1
    assert signature == outbox.webhook_signature(SECRET, timestamp, body)
    assert signature != outbox.webhook_signature("another secret", timestamp, body)
    return headers["X-Backoffice-Event"], json.loads(body)


def test_a_succeeded_charge_posts_one_signed_event(
    hooked_space, receiver, clerk, approver, register_card, django_capture_on_commit_callbacks
):
    started = int(time.time())

    issue = _charge(
        hooked_space,
        number=VISA,
        clerk=clerk,
        approver=approver,
        register_card=register_card,
        capture=django_capture_on_commit_callbacks,
    )

    assert issue.state == ChargeIssue.State.SUCCEEDED
    event_type, payload = _the_one_event(receiver, started)
    assert event_type == payload["type"] == "charge_issue.succeeded"
    assert payload["data"]["id"] == issue.pk
    assert payload["data"]["state"] == "succeeded"
    assert (payload["data"]["amount_minor"], payload["data"]["currency"]) == (1234, "EUR")
    assert payload["data"]["failure_code"] == ""


def test_a_failed_charge_posts_one_signed_event_with_the_failure(
    hooked_space, receiver, clerk, approver, register_card, django_capture_on_commit_callbacks
):
    started = int(time.time())

    issue = _charge(
        hooked_space,
        number=DECLINES_ON_CHARGE,
        clerk=clerk,
        approver=approver,
        register_card=register_card,
        capture=django_capture_on_commit_callbacks,
    )

    # The failed charge goes to collection (the charge flow's own events are collection.*).
    assert issue.state == ChargeIssue.State.COLLECTING and issue.failure_code
    events = [_verified(request, started) for request in receiver.received]
    ((event_type, payload),) = [e for e in events if e[0].startswith("charge_issue.")]
    assert event_type == payload["type"] == "charge_issue.collecting"
    assert (payload["data"]["id"], payload["data"]["state"]) == (issue.pk, "collecting")
    assert payload["data"]["amount_minor"] == 1234
    assert payload["data"]["failure_code"] == issue.failure_code
    assert payload["data"]["failure_message"] == issue.failure_message
