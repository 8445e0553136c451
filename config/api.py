"""/api/v1/: one django-ninja API for other systems, with its OpenAPI 3 schema at
/api/v1/openapi.json and interactive docs at /api/v1/docs (Swagger UI from the files that
django-ninja ships, served as our static files: the page loads nothing from elsewhere).

The operations live with their apps (billing/api.py, recurring/api.py). Here: every answer
ninja would give by itself is put in the project's one error shape {"error", "code",
"fields"}: a query or path parameter that does not validate is a 400 "invalid" with the
problems per field (not ninja's 422 {"detail"}), a refused key a 401 and an exceeded rate a
429 (billing.api.ApiKeyAuth), a wrong method a 405 with Allow.
"""

from functools import wraps

from django.http import HttpResponseNotAllowed
from django.urls import include
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from billing import api as billing_api
from core.errors import error_json

# The docs page runs Swagger UI's two scripts and stylesheet from our static files and fetches
# only the schema; nothing inline runs (its settings are a JSON data block).
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def _docs_headers(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = DOCS_CSP
        return response

    return wrapped


api = NinjaAPI(
    title="Charging back office API",
    version="1",
    description=(
        "Start, read, list and cancel charging issues, and manage recurring lines, with a "
        "space's API key (`Authorization: Bearer bo_...`, made in the admin under API keys). "
        'Every error is `{"error", "code"}`, with `"fields"` for 400 `invalid`.'
    ),
    urls_namespace="api_v1",
    docs_decorator=_docs_headers,
)


def _field_name(location) -> str:
    # ("query", "filters", "limit") -> "limit"; ("path", "id") -> "id"
    names = [str(part) for part in location if part not in ("query", "path", "header", "body")]
    return names[-1] if names else "request"


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    fields: dict[str, list[str]] = {}
    for error in exc.errors:
        fields.setdefault(_field_name(error.get("loc", ())), []).append(str(error.get("msg")))
    return billing_api.invalid_response(fields)


@api.exception_handler(billing_api.ApiRefused)
def _refused(request, exc: billing_api.ApiRefused):
    return exc.response


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):  # pragma: no cover - ApiKeyAuth raises ApiRefused instead
    return billing_api.authenticate(request)


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    return error_json(exc.status_code, "http_error", str(exc))


@api.exception_handler(Exception)
def _server_error(request, exc):
    # Django's 500 handling: logged, and config.views.server_error's JSON answer.
    raise exc


api.add_router("", billing_api.router)
# Imported here, not at the top: recurring sits above billing and imports it.
from recurring import api as recurring_api  # noqa: E402

api.add_router("", recurring_api.router)


def _json_405(view):
    """ninja answers a method no operation takes with a bare 405: ours is JSON, with Allow."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allow = ", ".join(sorted(method.strip() for method in response["Allow"].split(",")))
            response = error_json(405, "method_not_allowed", f"Use {allow} at this address.")
            response["Allow"] = allow
        return response

    return wrapped


def _includes():
    """The API's URL patterns (405s in JSON) in three namespaces: billing_api:... and
    recurring_api:... for the operations, as before the move to ninja, and api_v1:... for the
    schema and the docs (ninja's docs page finds the schema by that namespace)."""
    groups = {"billing_api": [], "recurring_api": [], api.urls_namespace: []}
    for pattern in api.urls[0]:
        route = str(pattern.pattern)
        pattern.callback = _json_405(pattern.callback)
        if route.startswith("charge-issues"):
            groups["billing_api"].append(pattern)
        elif route.startswith("recurring-lines"):
            groups["recurring_api"].append(pattern)
        else:
            groups[api.urls_namespace].append(pattern)
    return [include((patterns, namespace)) for namespace, patterns in groups.items()]


# path("api/v1/", include) for each (config/urls.py).
API_V1_INCLUDES = _includes()
