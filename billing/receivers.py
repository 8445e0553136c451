import logging

from django.dispatch import receiver

from cards.signals import card_registered

from . import services
from .exceptions import NoChargeableCard

logger = logging.getLogger(__name__)


@receiver(card_registered, dispatch_uid="billing.start_issue_on_card_registered")
def start_issue_on_card_registered(sender, event, **kwargs):
    # Runs inside the transaction that marks the event dispatched: exactly one issue per event.
    try:
        services.charge_issue_start_from_card_event(event=event)
    except NoChargeableCard:
        # The card expired or was detached before the event was dispatched: nothing to charge.
        logger.info("card event %s started no charge: no active card", event.pk)
