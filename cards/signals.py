from django.dispatch import Signal

# Sent inside the transaction that marks a "card registered" event dispatched, with
# `event` (a CardEvent). Receivers' writes commit or roll back with it, so each event starts
# its follow-up work (billing's charging issue) exactly once.
card_registered = Signal()
