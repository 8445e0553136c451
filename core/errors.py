"""Domain errors: a broken rule with a stable `code` (for logs and API clients), a `message`
safe to show a customer or clerk, and optionally the form `field` it is about.

Every app's errors (BillingError, CardsError, SpaceError, ...) subclass DomainError, so the
admin, the hosted pages and the API show any of them the same way (the helpers below). Logs get
the code and ids, never the message's data.
"""

from django.contrib import messages
from django.http import JsonResponse


class DomainError(Exception):
    """A rule was broken. Subclasses set a default `code` and `message`; a raise may override
    either, and name the `field` the message belongs to."""

    code = "domain_error"
    message = "This cannot be done."
    field = None

    def __init__(self, message: str | None = None, *, code: str | None = None, field=None):
        if message:
            self.message = message
        if code:
            self.code = code
        if field is not None:
            self.field = field
        super().__init__(self.message)


def error_json(status: int, code: str, message: str, **extra) -> JsonResponse:
    """The one shape of an error answer in JSON: {"error": <message>, "code": <code>, ...}."""
    return JsonResponse({"error": message, "code": code, **extra}, status=status)


def domain_error_json(error: DomainError, *, status: int) -> JsonResponse:
    return error_json(status, error.code, error.message)


def form_add_domain_error(form, error: DomainError) -> None:
    """Show a service's refusal next to the field it names, else above the form."""
    form.add_error(error.field if error.field in form.fields else None, error.message)


def message_refusal(request, error: DomainError, *, subject=None) -> None:
    """Tell staff (the admin's messages) what was refused; `subject` names the object when an
    action runs over several."""
    text = f"{subject}: {error.message}" if subject is not None else error.message
    messages.error(request, text)
