import json
import time
import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from billing import services as billing_services
from billing.models import ChargeIssue
from payments import attempts, outbox
from spaces.roles import APPROVER, CLERK
from tests.billing.conftest import register_card, space  # noqa: F401 - shared fixtures
from tests.factories import StaffUserFactory


def signed_post(client, event: dict, *, secret=None, age: int = 0):
    """POST an event to our endpoint signed like Stripe does (t=…,v1=HMAC of "t.body")."""
    body = json.dumps(event).encode()
    timestamp = int(time.time()) - age
    signature = outbox.webhook_signature(secret or settings.STRIPE_WEBHOOK_SECRET, timestamp, body)
    return client.post(
        "/webhooks/stripe",
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": signature},
    )


def event_for(event_type: str, obj: dict, *, event_id: str | None = None) -> dict:
    return {
        # No long digit runs in ids: the card-number guard would refuse the request.
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj},
    }


@pytest.fixture
def post_event(client, django_capture_on_commit_callbacks):
    """signed_post with the view's on-commit work (the processing task) run, as after a
    real commit."""

    def post(event, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return signed_post(client, event, **kwargs)

    return post


@pytest.fixture
def charge_approved(space, register_card):  # noqa: F811
    """Register a card, enter and approve an amount; returns a function that charges it
    (optionally with the worker "killed" right after the provider call)."""
    clerk = StaffUserFactory(username="clerk-p", role=CLERK, spaces=[space])
    approver = StaffUserFactory(username="approver-p", role=APPROVER, spaces=[space])

    def charge(*, number="4242424242424242", crash_after_call=False, monkeypatch=None):
        registration = register_card(space, number=number)
        issue = ChargeIssue.objects.get(customer=registration.customer)
        billing_services.charge_amount_enter(
            issue=issue,
            acting_user=clerk,
            amount="12.34",
            currency="EUR",
            notification_subject="Your order",
            notification_body="We charge your card on file.",
            charge_date=timezone.now() + timezone.timedelta(days=1),
        )
        billing_services.charge_issue_approve(issue=issue, acting_user=approver)
        ChargeIssue.objects.filter(pk=issue.pk).update(charge_date=timezone.now())
        if crash_after_call:
            real = attempts.attempt_record

            def crash(**kwargs):
                # Fault injection: the worker dies after the provider charged, before our record.
                raise SystemExit("worker killed")

            monkeypatch.setattr(attempts, "attempt_record", crash)
            with pytest.raises(SystemExit):
                billing_services.charge_issue_charge(issue_id=issue.pk)
            monkeypatch.setattr(attempts, "attempt_record", real)
        else:
            billing_services.charge_issue_charge(issue_id=issue.pk)
        issue.refresh_from_db()
        return issue

    return charge
