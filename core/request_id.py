"""Every request gets an id: in the `X-Request-ID` response header and on every log line
written while it is served (core.logging's context), so a support question quoting the header
finds the request's lines.

An id sent by the proxy in front (`X-Request-ID`) is kept when it looks like one, so the
proxy's access log and ours share it; anything else is replaced with a fresh one.
"""

import re
import uuid

from .cardguard import contains_card_number
from .logging import log_context_end, log_context_start

HEADER = "X-Request-ID"
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._-]{8,64}")


def _incoming(request) -> str | None:
    value = request.headers.get(HEADER, "")
    if _ACCEPTABLE.fullmatch(value) and not contains_card_number(value):
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
        finally:
            log_context_end(token)
        response[HEADER] = request.request_id
        return response
