from django.dispatch import Signal

# Sent once per attempt when its final outcome (succeeded or failed) has been committed, with
# attempt_id, purpose, owner_id and status. The owner's state change, audit and outbound
# event are already in that transaction; receivers send what follows (emails).
attempt_settled = Signal()

# Sent inside the transaction that processes a provider event the rooms above own (payment
# method events: cards), with event_type and obj (the event's data.object). A receiver's
# writes join that transaction; raising makes the event be retried.
provider_event_received = Signal()
