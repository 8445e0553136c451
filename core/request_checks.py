"""Checks on a request before any view reads it."""

from django.core.exceptions import BadRequest


class NullByteGuardMiddleware:
    """Refuses (400) a path or query string carrying a NUL character.

    PostgreSQL refuses NUL in text, so a lookup with one (an admin list filter such as
    `?state=%00`, a search) raised DataError, a 500. Form fields refuse NUL themselves
    (Django's CharField); the URL reaches querysets without a form, so it is checked here once.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path_info or any(
            "\x00" in key or any("\x00" in value for value in values)
            for key, values in request.GET.lists()
        ):
            # Answered by config.views.bad_request: a page, or JSON under /api/.
            raise BadRequest("A NUL character in the path or query string.")
        return self.get_response(request)
