"""Project-wide views: the health check and the error pages (handler400... in config/urls.py).

Every error answer says what happened and offers a way back, in the form the caller reads:
JSON {"error", "code"} under /api/ (like every other API answer), an admin page under /admin/,
a styled page elsewhere. Pages of the hosted customer area carry the hosted pages' headers
(CSP and the rest) like the pages themselves. No error page shows the exception's text: it
may name models, queries or the input that failed.
"""

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.urls import reverse
from django.utils import translation
from django.utils.cache import patch_cache_control
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.log import log_response
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import requires_csrf_token
from django.views.decorators.http import require_GET
from django.views.i18n import JavaScriptCatalog

from core.errors import error_json
from core.hosted import apply_hosted_headers

from .health import logger as health_logger
from .health import provider_check, readiness_checks

API_PREFIX = "/api/"
ADMIN_PREFIX = "/admin/"
# The customer-facing area whose pages carry core.hosted's headers, error pages included.
HOSTED_PREFIXES = ("/register/",)


@never_cache
@require_GET
def healthz_live(request):
    """Liveness: this process answers. Touches no dependency, so a database or provider outage
    never makes an orchestrator restart healthy web processes (that is readiness's job: take
    them out of the load balancer until the dependency is back)."""
    return JsonResponse({"status": "ok"})


def _health_response(request, checks: dict[str, dict]) -> JsonResponse:
    """200 when every check passed, else 503 naming what is down. A failing probe is logged
    once, as a WARNING from config.health: probes repeat every few seconds from every load
    balancer, and an outage is reported by monitoring, not by a stream of ERROR lines (Django
    would log any 503 at ERROR; log_response marks this one as logged)."""
    down = [f"{name} ({result['error']})" for name, result in checks.items() if not result["ok"]]
    response = JsonResponse(
        {"status": "unavailable" if down else "ok", "checks": checks},
        status=503 if down else 200,
    )
    if down:
        log_response(
            "Health probe %s: down: %s",
            request.path,
            ", ".join(down),
            response=response,
            request=request,
            logger=health_logger,
            level="warning",
        )
    return response


@never_cache
@require_GET
def healthz_ready(request):
    """Readiness: the database and the broker answer; 503 naming what is down. The provider is
    not asked (see config/health.py): its outage must not take every web process out of the
    load balancer. Also served at /healthz, as before liveness and readiness were told apart."""
    return _health_response(request, readiness_checks())


@never_cache
@require_GET
def healthz_provider(request):
    """For monitoring, not load balancers: the payment provider answers (our key accepted),
    from a result shared by all processes for a few seconds; 503 when it does not."""
    return _health_response(request, provider_check())


# --- Error pages ------------------------------------------------------------------------------

# status: (code for API clients, title, what happened in words a customer or clerk can act on)
ERRORS = {
    400: (
        "bad_request",
        "Bad request",
        "We could not read this request, so nothing was done. Go back and try again.",
    ),
    403: (
        "forbidden",
        "Not allowed",
        "You are not allowed to open this page. If you think you should be, ask an "
        "administrator of your space.",
    ),
    404: (
        "not_found",
        "Page not found",
        "There is nothing at this address. The link may be mistyped or out of date.",
    ),
    413: (
        "payload_too_large",
        "Request too large",
        "This request was larger than we accept, so nothing was done.",
    ),
    500: (
        "server_error",
        "Something went wrong",
        "An error on our side stopped this request. It has been logged; please try again "
        "in a few minutes.",
    ),
}


CSRF_MESSAGE = (
    "This form could not be accepted: the page was open too long, or your browser did not "
    "send our cookie. Go back, reload the page and send the form again."
)


def _path(request) -> str:
    return getattr(request, "path_info", "") or ""


def _is_api(request) -> bool:
    return _path(request).startswith(API_PREFIX)


def _is_hosted(request) -> bool:
    return _path(request).startswith(HOSTED_PREFIXES)


def _back_url(request) -> str:
    """Where "Go back" leads: the page the visitor came from on this site, else the start of
    the admin for staff pages, else nowhere (the page then says to use the Back button)."""
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return referer
    if _path(request).startswith(ADMIN_PREFIX):
        return reverse("admin:index")
    return ""


def _error_response(request, status: int, *, message: str = "") -> HttpResponse:
    code, title, default_message = ERRORS[status]
    message = message or default_message
    if _is_api(request):
        return error_json(status, code, message)
    context = {"status": status, "title": title, "message": message}
    context["back_url"] = _back_url(request)
    # An admin page (header, user tools, breadcrumbs), so staff stay in the back office. Only
    # for staff: the admin's layout shows the user's menu and avatar and needs a user (for an
    # anonymous visitor, e.g. a CSRF failure at the login form, it raised: a 500), and not
    # when a middleware refused the request before the user was known.
    if (
        _path(request).startswith(ADMIN_PREFIX)
        and hasattr(request, "user")
        and admin.site.has_permission(request)
    ):
        context.update(admin.site.each_context(request))
        response = render(request, "admin/error_page.html", context, status=status)
    else:
        response = render(request, f"{status}.html", context, status=status)
    if _is_hosted(request):
        apply_hosted_headers(response)
    return response


@requires_csrf_token
def bad_request(request, exception=None):
    # The body was over DATA_UPLOAD_MAX_MEMORY_SIZE: say so (413), in JSON for the API, rather
    # than a bare 400 (whichever layer read the body first raised this).
    if isinstance(exception, RequestDataTooBig):
        return _error_response(request, 413)
    return _error_response(request, 400)


@requires_csrf_token
def permission_denied(request, exception=None):
    return _error_response(request, 403)


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: usually a page left open too long, or a browser refusing cookies."""
    return _error_response(request, 403, message=CSRF_MESSAGE)


@requires_csrf_token
def page_not_found(request, exception=None):
    return _error_response(request, 404)


def server_error(request=None):
    """The 500 page: a static template rendered without the request or its context processors,
    which may need the database or the session that just failed."""
    code, _, message = ERRORS[500]
    if request is not None and _is_api(request):
        return error_json(500, code, message)
    response = HttpResponse(loader.get_template("500.html").render(), status=500)
    if request is not None and _is_hosted(request):
        apply_hosted_headers(response)
    return response


class HostedJavaScriptCatalog(JavaScriptCatalog):
    """The hosted pages' script sentences in the language named in the URL: the page's own,
    which for an invitation or a payment link is the customer's, not the browser's."""

    def get(self, request, *args, language, **kwargs):
        if language not in dict(settings.LANGUAGES):
            raise Http404("No such language.")
        with translation.override(language):
            response = super().get(request, *args, **kwargs)
        # The catalogue changes only with a deployment.
        patch_cache_control(response, public=True, max_age=3600)
        return response
