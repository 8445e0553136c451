"""The missing-card reminder email (its own task: a retry never re-creates the invitation)."""

from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import translation

from cards.models import CardInvitation
from cards.services import card_invitation_url
from core.money import format_money_local

from .models import RecurringLine


def card_reminder_send(*, line_id: int, invitation_id: int) -> None:
    line = RecurringLine.objects.select_related("customer", "space").get(pk=line_id)
    invitation = CardInvitation.objects.get(pk=invitation_id)
    if invitation.used_at is not None or line.card_id is not None:
        return  # a card arrived meanwhile: nothing to ask for
    customer = line.customer
    context = {
        "customer": customer,
        "space": line.space,
        "line": line,
        "amount": format_money_local(line.amount_minor, line.currency, customer.preferred_language),
        "url": card_invitation_url(invitation),
        "expires_at": invitation.expires_at,
    }
    with translation.override(customer.preferred_language):
        subject = render_to_string("recurring/emails/card_reminder_subject.txt", context).strip()
        text = render_to_string("recurring/emails/card_reminder.txt", context)
        html = render_to_string("recurring/emails/card_reminder.html", context)
    message = EmailMultiAlternatives(subject, text, to=[customer.email])
    message.attach_alternative(html, "text/html")
    message.send()
