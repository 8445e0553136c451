"""Every request gets an id: in the `X-Request-ID` response header and on every log line
written while it is served (core.logging's context), Django's own 4xx/5xx lines included, and
on the lines of every task it starts (config/celery.py), so a support question quoting the
header finds the request's lines.

An id sent by the proxy in front (`X-Request-ID`) is kept when it looks like one, so the
proxy's access log and ours share it; anything else is replaced with a fresh one.
"""

import re
import uuid

from django.utils.log import log_response

from .cardguard import contains_card_data
from .logging import log_context_end, log_context_start

HEADER = "X-Request-ID"
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._-]{8,64}")


def _incoming(request) -> str | None:
    value = request.headers.get(HEADER, "")
    if _ACCEPTABLE.fullmatch(value) and not contains_card_data(value):
        return value
    return None


class RequestIdMiddleware:
    """First in MIDDLEWARE: early answers (redirects, the card guard's refusals) carry it too."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = _incoming(request) or uuid.uuid4().hex
        token = log_context_start(request_id=request.request_id)
        try:
            response = self.get_response(request)
            if response.status_code >= 400:
                # Django logs an error answer ("Not Found: /x", "Bad Request: /x") after the
                # whole middleware chain has returned, when this request's log context is gone;
                # logged here, the line carries the request id (and the space and issue a view
                # bound). log_response() marks the response, so Django does not log it twice,
                # and skips one already marked (the card-number guard's refusals).
                log_response(
                    "%s: %s",
                    response.reason_phrase,
                    request.path,
                    response=response,
                    request=request,
                )
        finally:
            log_context_end(token)
        response[HEADER] = request.request_id
        return response
