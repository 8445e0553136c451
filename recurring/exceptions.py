from core.errors import DomainError


class RecurringError(DomainError):
    """A recurring-line rule was broken (see core.errors.DomainError: code, message, field)."""

    code = "recurring_error"
    message = "This recurring line cannot be changed that way."


class IllegalTransition(RecurringError):
    code = "illegal_transition"


class NotAllowed(RecurringError):
    code = "not_allowed"
    message = "You are not allowed to do this."


class InvalidInput(RecurringError):
    code = "invalid"
