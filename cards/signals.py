from django.dispatch import Signal

# Sent inside the transaction that marks a "card registered" event dispatched, with
# `event` (a CardEvent). Receivers' writes commit or roll back with it, so each event starts
# its follow-up work (billing's charging issue) exactly once.
card_registered = Signal()

# Sent inside the transaction that changes a card, so that higher rooms (recurring lines that
# follow a card by its lookup key) write in the same transaction: cards never imports them.
# `card` is the PaymentCard as saved.

# A card became chargeable for its customer: registered, or attached/live again.
payment_card_added = Signal()
# A card stopped being chargeable: detached at the provider or expired. (`card`)
payment_card_removed = Signal()
# A card's lookup key changed (card updater: new expiry or number; or its customer's number).
# (`card`, `old_key`)
payment_card_lookup_key_changed = Signal()
# A customer's external number (the CUSTOMER_ID of lookup keys) changed.
# (`customer`, `old_number`, `new_number`: the customer_number before and after)
customer_number_changed = Signal()
