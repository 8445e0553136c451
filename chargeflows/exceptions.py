from core.errors import DomainError


class ChargeFlowError(DomainError):
    """A charge-flow rule was broken (see core.errors.DomainError: code, message, field)."""

    code = "charge_flow_error"
    message = "This cannot be changed that way."


class IllegalTransition(ChargeFlowError):
    code = "illegal_transition"


class StaleEdit(ChargeFlowError):
    """Someone saved the row since this copy was read (optimistic locking)."""

    code = "stale_edit"


class NotAllowed(ChargeFlowError):
    code = "not_allowed"
    message = "You are not allowed to do this."


class InvalidInput(ChargeFlowError):
    code = "invalid_input"


class LinkRefused(ChargeFlowError):
    """A payment link that is tampered with, expired, retired or already used."""

    code = "link_refused"
    language = ""  # the customer's, when the link is genuine
