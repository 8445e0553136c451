import logging

from django.dispatch import receiver

from cards.signals import card_registered
from payments.attempts import register_owner
from payments.models import ChargeAttempt
from payments.signals import attempt_settled

from . import refunds, services
from .charging import ISSUE_CHARGE
from .exceptions import NoChargeableCard
from .models import ChargeIssue
from .signals import collection_started

logger = logging.getLogger(__name__)

# Issues charge, and refunds refund, through payments' one money path (billing/charging.py
# and billing/refunds.py say how).
register_owner(ISSUE_CHARGE)
register_owner(refunds.REFUND_CHARGE)


@receiver(card_registered, dispatch_uid="billing.start_issue_on_card_registered")
def start_issue_on_card_registered(sender, event, **kwargs):
    # Runs inside the transaction that marks the event dispatched: exactly one issue per event.
    try:
        services.charge_issue_start_from_card_event(event=event)
    except NoChargeableCard:
        # The card expired or was detached before the event was dispatched: nothing to charge.
        logger.info("card event %s started no charge: no active card", event.pk)


@receiver(attempt_settled, dispatch_uid="billing.issue_outcome_on_attempt_settled")
def issue_outcome_on_attempt_settled(sender, purpose, owner_id, status, **kwargs):
    # Sent on commit of the attempt's record, in which billing.charging already applied the
    # outcome to TRANSITIONS (state, audit event, outbound event): what is left are the emails,
    # or, for a failure, the collection that tells the customer itself.
    if purpose != ISSUE_CHARGE.purpose:
        return
    if status == ChargeAttempt.Status.FAILED:
        collection_started.send(sender=ChargeIssue, issue_id=owner_id)
        return
    services.charge_issue_outcome_emails_dispatch(
        issue_id=owner_id, succeeded=status == ChargeAttempt.Status.SUCCEEDED
    )


@receiver(attempt_settled, dispatch_uid="billing.refund_outcome_on_attempt_settled")
def refund_outcome_on_attempt_settled(sender, purpose, owner_id, status, **kwargs):
    # The refund's state, audit and outbound event are committed; the customer hears of a
    # refund that succeeded (a failed one is for staff, who see it on the charge's page).
    if purpose != refunds.REFUND_CHARGE.purpose or status != ChargeAttempt.Status.SUCCEEDED:
        return
    refunds.refund_customer_email_dispatch(refund_id=owner_id)
