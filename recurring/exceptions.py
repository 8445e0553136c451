class RecurringError(Exception):
    """A rule was broken. `message` is safe to show; `code` is for logs and API clients;
    `field` names the input at fault, if one is."""

    code = "recurring_error"
    message = "This recurring line cannot be changed that way."

    def __init__(self, message: str | None = None, *, code: str | None = None, field=None):
        if message:
            self.message = message
        if code:
            self.code = code
        self.field = field
        super().__init__(self.message)


class IllegalTransition(RecurringError):
    code = "illegal_transition"


class NotAllowed(RecurringError):
    code = "not_allowed"
    message = "You are not allowed to do this."


class InvalidInput(RecurringError):
    code = "invalid"
