"""Recurring lines follow their card. cards sends these signals inside its own transaction and
never imports recurring: the writes here commit or roll back with the card change."""

from django.dispatch import receiver

from cards.signals import (
    customer_number_changed,
    payment_card_added,
    payment_card_lookup_key_changed,
    payment_card_removed,
)

from . import services


@receiver(payment_card_added, dispatch_uid="recurring.fill_lines_on_card_added")
def fill_lines_on_card_added(sender, card, **kwargs):
    services.recurring_lines_fill_for_card(card=card)


@receiver(payment_card_removed, dispatch_uid="recurring.empty_lines_on_card_removed")
def empty_lines_on_card_removed(sender, card, **kwargs):
    services.recurring_lines_empty_for_card(card=card)


@receiver(payment_card_lookup_key_changed, dispatch_uid="recurring.move_keys_on_key_changed")
def move_keys_on_key_changed(sender, card, old_key, **kwargs):
    services.recurring_lines_key_move(card=card, old_key=old_key)


@receiver(customer_number_changed, dispatch_uid="recurring.rekey_lines_on_customer_number")
def rekey_lines_on_customer_number(sender, customer, old_number, new_number, **kwargs):
    services.recurring_lines_customer_renumber(
        customer=customer, old_number=old_number, new_number=new_number
    )
