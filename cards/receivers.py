from django.dispatch import receiver

from payments.signals import provider_event_received

from . import services


@receiver(provider_event_received, dispatch_uid="cards.payment_method_event")
def payment_method_event(sender, event_type, obj, **kwargs):
    # Runs inside payments' processing transaction: the card's change, its CardEvent and the
    # provider event's "processed" mark commit together.
    if event_type.startswith("payment_method.") and obj.get("id"):
        if obj.get("type") == "sepa_debit":
            services.sepa_debit_sync_from_provider(payment_method_id=obj["id"])
        else:
            services.payment_card_sync_from_provider(
                payment_method_id=obj["id"], event_type=event_type
            )
