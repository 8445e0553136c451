import logging
from urllib.parse import unquote_plus

from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string

from .luhn import contains_card_number

logger = logging.getLogger(__name__)

REFUSAL = (
    "This request looked like it contained a card number, so we refused it and kept nothing. "
    "Never type card numbers into our forms: enter them only in the secure card field."
)


class CardNumberGuardMiddleware:
    """Refuses (400) any request whose path, query string or body carries a card number.

    Card data must only ever reach the payment provider. The value is neither logged nor
    stored: only the fact and the path are logged. Placed before CSRF and sessions so a
    refused request touches nothing.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if self._carries_card_number(request):
            logger.warning("refused a request carrying a card number: %s", request.path)
            return self._refuse(request)
        return self.get_response(request)

    @staticmethod
    def _carries_card_number(request) -> bool:
        parts = [
            unquote_plus(request.path_info),
            unquote_plus(request.META.get("QUERY_STRING", "")),
        ]
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            body = request.body.decode("utf-8", errors="replace")
            parts.append(body)
            # Form bodies encode spaces and separators: look at the decoded form too.
            parts.append(unquote_plus(body))
        return any(contains_card_number(part) for part in parts)

    @staticmethod
    def _refuse(request):
        accepts_json = "json" in request.headers.get("Accept", "") or "json" in (
            request.content_type or ""
        )
        if accepts_json:
            return JsonResponse({"error": REFUSAL, "code": "card_number_refused"}, status=400)
        html = render_to_string("cards/card_number_refused.html", {"message": REFUSAL})
        return HttpResponse(html, status=400)
