class BillingError(Exception):
    """A rule was broken. `message` is safe to show; `code` is for logs and API clients."""

    code = "billing_error"
    message = "This charge cannot be changed that way."

    def __init__(self, message: str | None = None, *, code: str | None = None, field=None):
        if message:
            self.message = message
        if code:
            self.code = code
        self.field = field
        super().__init__(self.message)


class IllegalTransition(BillingError):
    code = "illegal_transition"


class NotAllowed(BillingError):
    code = "not_allowed"
    message = "You are not allowed to do this."


class SelfApprovalRefused(NotAllowed):
    code = "self_approval"
    message = "You entered this amount, so someone else must approve it (four-eyes rule)."


class InvalidAmount(BillingError):
    code = "invalid_amount"


class InvalidInput(BillingError):
    """A field of a step is not acceptable; `field` names it."""

    code = "invalid_input"


class NoChargeableCard(BillingError):
    code = "no_card"
    message = "This customer has no active card on file."


class SpaceMismatch(BillingError):
    """A card, customer and issue must belong together, in one space."""

    code = "space_mismatch"
    message = "This card belongs to another customer or space; it cannot be charged here."
