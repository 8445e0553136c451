"""Issue 7 §3: a webhook goes only to public addresses, checked again right before every
delivery (a name can be re-pointed after the URL was saved), and connected to the address
that was checked."""

import socket
import threading
from http.server import HTTPServer

import pytest

from billing.models import ChargeIssue
from payments import outbox
from payments.models import DeliveryAttempt, OutboundEvent
from spaces.models import Space, validate_webhook_url
from tests.billing.test_webhooks import _Receiver
from tests.factories import PaymentCardFactory, SpaceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    """An HTTP server on the loopback that records what it receives."""
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def issue():
    space = SpaceFactory(name="Shop", slug="shop")
    card = PaymentCardFactory(customer__space=space)
    return ChargeIssue.objects.create(
        space=space,
        customer=card.customer,
        card=card,
        source=ChargeIssue.Source.STAFF,
        customer_name=card.customer.name,
        customer_email=card.customer.email,
        provider_customer_id="cus_x",
        card_last4=card.last4,
        amount_minor=1234,
        currency="EUR",
        state=ChargeIssue.State.SUCCEEDED,
    )


def point(issue, url):
    # Saved as if it was accepted earlier: what it points at now is what delivery must check.
    Space.objects.filter(pk=issue.space_id).update(webhook_url=url)
    issue.space.refresh_from_db()


def deliver(issue) -> tuple[bool, OutboundEvent]:
    """Write the issue's event to the outbox and try to deliver it once, now."""
    event = outbox.outbound_event_create(
        space=issue.space, type="charge_issue.succeeded", payload={"id": issue.pk}
    )
    delivered = outbox.outbound_event_deliver(event_id=event.pk)
    event.refresh_from_db()
    return delivered, event


def refusal(event) -> str:
    (attempt,) = DeliveryAttempt.objects.filter(event=event)
    assert attempt.succeeded is False and attempt.status_code is None
    return attempt.error


@pytest.fixture
def resolver(monkeypatch):
    """A stand-in DNS for names under .example.test (no DNS server runs here; the real
    resolver answers every other name, the loopback's included)."""
    answers = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return real(answers[host], port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "10.0.0.8", "169.254.169.254", "[::1]", "localhost", "[::ffff:127.0.0.1]"],
)
def test_delivery_to_a_non_public_address_is_refused_logged_and_not_sent(issue, receiver, host):
    point(issue, f"http://{host}:{receiver.server_port}/backoffice-events")

    delivered, event = deliver(issue)

    assert delivered is False
    assert receiver.received == []
    assert refusal(event) == "refused: webhook_url_not_public"
    # Retrying cannot help until staff fix the URL: given up at once, visible for redelivery.
    assert event.given_up is True and event.delivered_at is None


def test_a_name_re_pointed_at_our_network_after_it_was_saved_is_refused(issue, receiver, resolver):
    resolver["hooks.example.test"] = "93.184.216.34"
    validate_webhook_url("https://hooks.example.test/events")  # accepted when saved
    point(issue, f"http://hooks.example.test:{receiver.server_port}/backoffice-events")
    resolver["hooks.example.test"] = "127.0.0.1"  # DNS rebinding

    delivered, event = deliver(issue)

    assert delivered is False and receiver.received == []
    assert refusal(event) == "refused: webhook_url_not_public"


def test_delivery_connects_to_the_checked_address_with_the_original_host_name(
    issue, receiver, resolver, settings
):
    settings.WEBHOOK_ALLOWED_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    resolver["hooks.example.test"] = "127.0.0.1"
    point(issue, f"http://hooks.example.test:{receiver.server_port}/backoffice-events?a=1")

    delivered, event = deliver(issue)

    assert delivered is True
    ((path, headers, _body),) = receiver.received
    assert path == "/backoffice-events?a=1"
    assert headers["Host"] == f"hooks.example.test:{receiver.server_port}"


def test_https_is_required_at_delivery_when_http_is_not_allowed(issue, receiver, settings):
    settings.WEBHOOK_ALLOW_HTTP = False
    settings.WEBHOOK_ALLOWED_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    point(issue, f"http://127.0.0.1:{receiver.server_port}/backoffice-events")

    delivered, event = deliver(issue)

    assert delivered is False and receiver.received == []
    assert refusal(event) == "refused: webhook_url_scheme"
