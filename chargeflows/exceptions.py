class ChargeFlowError(Exception):
    """A rule was broken. `message` is safe to show; `code` is for logs."""

    code = "charge_flow_error"
    message = "This cannot be changed that way."

    def __init__(self, message: str | None = None, *, code: str | None = None, field=None):
        if message:
            self.message = message
        if code:
            self.code = code
        self.field = field
        super().__init__(self.message)


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
