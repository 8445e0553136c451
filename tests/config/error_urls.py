"""A test-only URLconf: the project's URLs and error handlers plus views that fail on purpose,
under each area whose errors look different (API, hosted pages, admin, elsewhere)."""

from django.core.exceptions import BadRequest, PermissionDenied
from django.urls import path

from config.urls import handler400, handler403, handler404, handler500
from config.urls import urlpatterns as project

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


def bad_request(request):
    raise BadRequest("the detail that must not be shown")


def forbidden(request):
    raise PermissionDenied("the detail that must not be shown")


def crash(request):
    raise RuntimeError("the detail that must not be shown")


def _failing(prefix: str) -> list:
    return [
        path(f"{prefix}bad-request/", bad_request),
        path(f"{prefix}forbidden/", forbidden),
        path(f"{prefix}crash/", crash),
    ]


urlpatterns = [
    *_failing(""),
    *_failing("api/v1/"),
    *_failing("register/"),
    *project,
]
