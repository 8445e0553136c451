from core.errors import DomainError


class BillingError(DomainError):
    """A charging-issue rule was broken (see core.errors.DomainError: code, message, field)."""

    code = "billing_error"
    message = "This charge cannot be changed that way."


class IllegalTransition(BillingError):
    code = "illegal_transition"


class NotAllowed(BillingError):
    code = "not_allowed"
    message = "You are not allowed to do this."


class NotFound(NotAllowed):
    """The object is outside the user's spaces: for them it does not exist (a 404 in the
    admin and the API). Nothing about the attempt is written into that space's history."""

    code = "not_found"
    message = "There is no such charge in your spaces."


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


class RefundAboveLeft(BillingError):
    """A refund larger than what is left of the charge (refunded and pending ones counted)."""

    code = "refund_above_left"
    message = "This is more than can still be refunded."
    field = "amount"


class RefundSelfApprovalRefused(SelfApprovalRefused):
    code = "refund_self_approval"
    message = "You requested this refund, so someone else must approve it (four-eyes rule)."


class ReferenceInUse(BillingError):
    """One live charge per reference and space (see models.LIVE_STATES): `existing_id` names
    the live one."""

    code = "reference_in_use"

    def __init__(self, existing_id: int):
        super().__init__(
            f"Charge #{existing_id} already has this reference and is not cancelled or failed: "
            "read it, or send another reference."
        )
        self.existing_id = existing_id
