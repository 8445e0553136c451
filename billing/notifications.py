"""What customers, staff and other systems are told about a charge. Called from tasks."""

import hashlib
import hmac
import json
import logging
import time

from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import translation

from core import outbound

from .models import ChargeIssue

logger = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_SECONDS = 10


def _send(template: str, context: dict, *, to: list[str], language: str) -> None:
    with translation.override(language):
        subject = render_to_string(f"billing/emails/{template}_subject.txt", context).strip()
        text = render_to_string(f"billing/emails/{template}.txt", context)
        html = render_to_string(f"billing/emails/{template}.html", context)
    message = EmailMultiAlternatives(" ".join(subject.split()), text, to=to)
    message.attach_alternative(html, "text/html")
    message.send()


def _issue(issue_id: int) -> ChargeIssue:
    return ChargeIssue.objects.select_related("space", "customer", "entered_by", "approved_by").get(
        pk=issue_id
    )


def notification_send(*, issue_id: int) -> None:
    """The customer notification with the clerk's wording, when the charge is scheduled."""
    issue = _issue(issue_id)
    _send(
        "notification",
        {"issue": issue},
        to=[issue.customer_email],
        language=issue.customer.preferred_language,
    )


def outcome_notify(*, issue_id: int) -> None:
    """After the charge: a receipt to the customer, or a notice to the staff who handled it;
    and the space's webhook, if it has one."""
    issue = _issue(issue_id)
    if issue.state == ChargeIssue.State.SUCCEEDED:
        _send(
            "receipt",
            {"issue": issue},
            to=[issue.customer_email],
            language=issue.customer.preferred_language,
        )
        event_type = "charge_issue.succeeded"
    elif issue.state == ChargeIssue.State.FAILED:
        staff = {u.email for u in (issue.entered_by, issue.approved_by) if u and u.email}
        if not staff:
            staff = set(
                get_user_model()
                .objects.filter(space_memberships__space=issue.space, is_active=True)
                .exclude(email="")
                .values_list("email", flat=True)
            )
        if staff:
            _send("failure_staff", {"issue": issue}, to=sorted(staff), language="en")
        event_type = "charge_issue.failed"
    else:
        return
    if issue.space.webhook_url:
        webhook_deliver(issue=issue, event_type=event_type)


def webhook_payload(issue: ChargeIssue, event_type: str) -> dict:
    return {
        "type": event_type,
        "created": int(time.time()),
        "data": {
            "id": issue.pk,
            "state": issue.state,
            # The same form the API accepts: the external number, else "id:<pk>".
            "customer": issue.customer.external_number or f"id:{issue.customer_id}",
            "amount_minor": issue.amount_minor,
            "currency": issue.currency,
            "reference": issue.external_reference,
            "failure_code": issue.failure_code,
            "failure_message": issue.failure_message,
            "hard_decline": issue.hard_decline,
        },
    }


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, like Stripe's own webhooks."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_deliver(*, issue: ChargeIssue, event_type: str) -> bool:
    """POST the signed event; raises on failure so the task retries with backoff.

    The URL was checked when it was saved, and is checked again here: its host must still
    resolve only to public addresses, and the request goes to the address checked (a name can
    be re-pointed at our own network after it was saved). A refused URL is logged with its
    code and nothing is sent (no retry: staff must fix the URL). True when delivered."""
    body = json.dumps(webhook_payload(issue, event_type), separators=(",", ":")).encode()
    timestamp = int(time.time())
    try:
        response = outbound.public_post(
            issue.space.webhook_url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Backoffice-Event": event_type,
                "X-Backoffice-Signature": webhook_signature(
                    issue.space.webhook_secret, timestamp, body
                ),
            },
            timeout=WEBHOOK_TIMEOUT_SECONDS,
        )
    except outbound.UnsafeURL as exc:
        logger.warning(
            "webhook for issue %s of space %s not sent: %s",
            issue.pk,
            issue.space_id,
            exc.code,
            extra={"code": exc.code},
        )
        return False
    response.raise_for_status()
    return True
