"""What customers, staff and other systems are told about a charge. Called from tasks."""

import logging
import re

from django.conf import settings
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


# The wording a clerk starts from when the space set none for the customer's language (the
# space's own: Space.notification_texts). No greeting: the email greets by name itself.
DEFAULT_WORDING = {
    "en": {
        "subject": "{space}: your card will be charged",
        "body": "We will charge your card on file for your order. Questions? Reply to this email.",
    },
    "de": {
        "subject": "{space}: Ihre Karte wird belastet",
        "body": "wir belasten Ihre hinterlegte Karte für Ihre Bestellung. Fragen? Antworten "
        "Sie einfach auf diese E-Mail.",
    },
    "ja": {
        "subject": "{space}: カードへのご請求のお知らせ",
        "body": "ご登録のカードにご注文代金を請求いたします。"
        "ご不明な点はこのメールにご返信ください。",
    },
}

# How a body that greets the customer itself starts (then the email adds no greeting of its
# own, so the customer never reads "Hello Erika Mustermann, Hello Erika,").
_GREETINGS = re.compile(
    r"^\s*(hello|hi|hey|dear|good (morning|afternoon|evening)|hallo|guten (tag|morgen|abend)"
    r"|liebe[rs]?|sehr geehrte[rs]?|moin|servus|こんにちは|拝啓)\b",
    re.IGNORECASE,
)


def body_greets(body: str) -> bool:
    """Whether the clerk's text starts with a greeting of its own."""
    return bool(_GREETINGS.match(body or ""))


def default_wording(*, space, language: str) -> dict:
    """{"subject", "body"}: the space's default notification wording in `language`, else the
    built-in one (English when there is none in that language)."""
    own = (space.notification_texts or {}).get(language) or {}
    built_in = DEFAULT_WORDING.get(language) or DEFAULT_WORDING["en"]
    return {
        "subject": own.get("subject") or built_in["subject"].format(space=space.name),
        "body": own.get("body") or built_in["body"],
    }


def wording_languages(*, space) -> list[tuple[str, str, dict]]:
    """(code, name, wording) for every language the back office writes in."""
    return [
        (code, name, default_wording(space=space, language=code))
        for code, name in settings.LANGUAGES
    ]


def reference(issue: ChargeIssue) -> str:
    """What the customer quotes: the order reference of the system that started the charge,
    else a short readable one of ours."""
    return issue.external_reference or f"C-{issue.pk:06d}"


def _context(issue: ChargeIssue) -> dict:
    return {
        "issue": issue,
        "reference": reference(issue),
        "greets": body_greets(issue.notification_body),
    }


def notification_preview(*, issue: ChargeIssue) -> dict:
    """The customer notification as it would be sent for `issue` (unsaved changes included),
    in the customer's language: {"subject", "text"}."""
    context = _context(issue)
    with translation.override(issue.customer.preferred_language):
        subject = render_to_string("billing/emails/notification_subject.txt", context).strip()
        text = render_to_string("billing/emails/notification.txt", context)
    return {"subject": " ".join(subject.split()), "text": text}


def _issue(issue_id: int) -> ChargeIssue:
    return ChargeIssue.objects.select_related("space", "customer", "entered_by", "approved_by").get(
        pk=issue_id
    )


def notification_send(*, issue_id: int) -> None:
    """The customer notification with the clerk's wording, when the charge is scheduled."""
    issue = _issue(issue_id)
    _send(
        "notification",
        _context(issue),
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
        _context(issue),
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
