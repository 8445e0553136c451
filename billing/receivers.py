from django.dispatch import receiver

from cards.signals import card_registered

from . import services
from .exceptions import NoChargeableCard


@receiver(card_registered, dispatch_uid="billing.start_issue_on_card_registered")
def start_issue_on_card_registered(sender, event, **kwargs):
    # Runs inside the transaction that marks the event dispatched: exactly one issue per event.
    try:
        services.charge_issue_start_from_card_event(event=event)
    except NoChargeableCard:
        pass  # the card expired or was detached before dispatch: nothing to charge
