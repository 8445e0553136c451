"""What customers, staff and other systems are told about a charge. Called from tasks."""

import logging

from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import translation

from .models import ChargeIssue, Refund

logger = logging.getLogger(__name__)


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


def customer_outcome_send(*, issue_id: int) -> None:
    """After the charge, in the customer's language: a receipt, or a clear notice that the
    charge failed and what they can do."""
    issue = _issue(issue_id)
    if issue.state == ChargeIssue.State.SUCCEEDED:
        template = "receipt"
    elif issue.state == ChargeIssue.State.FAILED:
        template = "failure_customer"
    else:
        return
    _send(
        template,
        {"issue": issue},
        to=[issue.customer_email],
        language=issue.customer.preferred_language,
    )


def refund_send(*, refund_id: int) -> None:
    """A refund was made: tell the customer, in their language, how much and to which card."""
    refund = Refund.objects.select_related("issue__space", "issue__customer").get(pk=refund_id)
    if refund.state != Refund.State.SUCCEEDED:
        return
    issue = refund.issue
    _send(
        "refund",
        {"issue": issue, "refund": refund},
        to=[issue.customer_email],
        language=issue.customer.preferred_language,
    )


# What staff should do about a failed charge, by how it failed (the decline reason itself is
# in the email too).
STAFF_ADVICE = {
    "hard": "This is a hard decline: do not retry this card. Ask the customer for another card "
    "(send a registration link from Customers), then start the charge again (1r.).",
    "insufficient_funds": "The customer's account lacked funds. Agree on a date with the "
    "customer and start the charge again (1r.) then.",
    "authentication_required": "The bank wants the customer to authenticate the payment. "
    "Ask the customer to register the card again, then start the charge again (1r.).",
    "soft": "The bank declined for now (a soft decline). Starting the charge again (1r.) "
    "later may succeed; if it fails again, ask the customer for another card.",
}


def staff_advice(issue: ChargeIssue) -> str:
    if issue.hard_decline:
        return STAFF_ADVICE["hard"]
    return STAFF_ADVICE.get(issue.failure_code, STAFF_ADVICE["soft"])


def staff_failure_send(*, issue_id: int) -> None:
    """A failed charge: tell the staff who handled it (else the space's staff) why, and what
    to do next."""
    issue = _issue(issue_id)
    if issue.state != ChargeIssue.State.FAILED:
        return
    staff = {u.email for u in (issue.entered_by, issue.approved_by) if u and u.email}
    if not staff:
        staff = set(
            get_user_model()
            .objects.filter(space_memberships__space=issue.space, is_active=True)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    if staff:
        _send(
            "failure_staff",
            {"issue": issue, "advice": staff_advice(issue)},
            to=sorted(staff),
            language="en",
        )
