from celery import shared_task

from . import services


@shared_task(name="cards.card_event_dispatch")
def card_event_dispatch(event_id: int) -> bool:
    return services.card_event_dispatch(event_id=event_id)


@shared_task(name="cards.card_events_redispatch")
def card_events_redispatch() -> int:
    return services.card_events_redispatch()


@shared_task(name="cards.payment_cards_expire")
def payment_cards_expire() -> int:
    return services.payment_cards_expire()


@shared_task(name="cards.payment_card_expiry_warnings_send")
def payment_card_expiry_warnings_send() -> int:
    return services.payment_card_expiry_warnings_send()


@shared_task(name="cards.payment_card_expiry_warning_email")
def payment_card_expiry_warning_email(card_id: int, invitation_id: int) -> None:
    services.payment_card_expiry_warning_email_send(card_id=card_id, invitation_id=invitation_id)


@shared_task(name="cards.card_invitation_email")
def card_invitation_email(invitation_id: int) -> None:
    services.card_invitation_email_send(invitation_id=invitation_id)
