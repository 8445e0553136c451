"""The card-number guard: a request carrying a card number or an IBAN never reaches a view.

Card numbers and IBANs must only ever reach the payment provider (DESIGN.md, invariant 1; the
SEPA pages send the IBAN from a field outside every form straight to the provider's script).
The guard reads the request as the application will read it, decoded, and refuses (400) when it
finds either (core.cardguard) anywhere:
- the path, percent-decoded (the view's arguments come from it);
- the query string: every key and value as `request.GET` decodes them, and the raw string;
- every header, names included (`HTTP_*` in META, so cookies too, also as `request.COOKIES`
  parses them); a value is also read percent-decoded and, when it is not ASCII, as the UTF-8
  that WSGI's Latin-1 hides;
- the body: form fields after decoding (urlencoded: every key and value; multipart: field names,
  values and file names, as `request.POST` and `request.FILES` give them, parsed from a copy in
  memory so that a view can still read `request.body`); any other body as text in its declared
  charset (UTF-8 when none), and every string (keys and values) of the JSON in it, parsed, so
  escapes (`"\\u0034242..."`) and UTF-16/UTF-32 bodies are read as the view reads them.

Also refused with 400, before anything reads them: a form declared in a charset other than
UTF-8 (our pages only send UTF-8; Django's form parsing fails on UTF-16 with a 500), and a body
that its declared charset (or UTF-8) cannot decode, or that declares a charset nobody knows.

Placed before sessions and CSRF so a refused request touches nothing: no session is loaded or
saved, no cookie is set, no row is written. Nothing logs what was refused: the warning names
the kind of refusal and the part of the request, never the path, query or body, and the
response is marked as logged so `django.request` does not log "Bad Request: <path>" for it.
"""

import codecs
import json
import logging
from urllib.parse import parse_qsl, unquote, unquote_plus

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from . import cardguard
from .cardguard import card_data_kind, contains_card_data
from .errors import error_json
from .hosted import apply_hosted_headers

logger = logging.getLogger(__name__)

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
UTF8_CODECS = ("utf-8", "ascii")  # codecs.lookup() names; ASCII is a subset of UTF-8

# A refused page has no script, frame or form of its own: the strictest policy fits.
REFUSAL_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


class Refusal:
    def __init__(self, code: str, title: str, message: str):
        self.code, self.title, self.message = code, title, message


CARD_NUMBER = Refusal(
    "card_number_refused",
    "Request refused: it contained a card number",
    "This request looked like it contained a card number, so we refused it and kept nothing. "
    "Never type card numbers into our forms: enter them only in the secure card field.",
)
IBAN = Refusal(
    "iban_refused",
    "Request refused: it contained a bank account number",
    "This request looked like it contained a full bank account number (IBAN), so we refused it "
    "and kept nothing. Enter an IBAN only in the bank account field of our payment pages.",
)
_REFUSAL_FOR_KIND = {cardguard.CARD_NUMBER: CARD_NUMBER, cardguard.IBAN: IBAN}
NOT_UTF8 = Refusal(
    "charset_not_utf8",
    "Please send UTF-8",
    "This form was sent in a character set other than UTF-8, so we could not read it and "
    "changed nothing. Send it again from our page, or encode it as UTF-8.",
)
UNDECODABLE = Refusal(
    "body_not_decodable",
    "Request unreadable",
    "We could not read the body of this request in the character set it declared (UTF-8 when "
    "it declares none), so we refused it and changed nothing. Send UTF-8.",
)


class _Refused(Exception):
    def __init__(self, refusal: Refusal, place: str):
        super().__init__(refusal.code)
        self.refusal, self.place = refusal, place


class CardNumberGuardMiddleware:
    """Refuses (400) any request carrying a card number or an IBAN, or a body it cannot
    read."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            _inspect(request)
        except _Refused as refused:
            # The code and the part of the request only: the path, query or body may hold the
            # number itself.
            logger.warning(
                "Refused a request: %s (in the %s).", refused.refusal.code, refused.place
            )
            return _refusal_response(request, refused.refusal)
        return self.get_response(request)


# --- Reading the request ----------------------------------------------------------------------


def _check(values, place: str) -> None:
    for value in values:
        if kind := card_data_kind(value):
            raise _Refused(_REFUSAL_FOR_KIND[kind], place)


def _text_forms(value: str):
    """A value as the application may read it: as sent, percent-decoded, and as UTF-8 when
    WSGI handed it over as Latin-1 (headers, the raw query string)."""
    yield value
    if "%" in value or "+" in value:
        yield unquote_plus(value)
    if not value.isascii():
        try:
            recoded = value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return
        yield recoded
        if "%" in recoded or "+" in recoded:
            yield unquote_plus(recoded)


def _inspect(request) -> None:
    """Raises _Refused for the first part of the request that must not go further."""
    path = request.path
    _check([path, unquote(path)] if "%" in path else [path], "path")

    query = request.META.get("QUERY_STRING", "")
    if query:
        _check(_text_forms(query), "query string")
        _check(_query_dict_strings(request.GET), "query string")

    for name, value in request.META.items():
        if name.startswith("HTTP_") or name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            _check([name], "header names")
            if isinstance(value, str):
                _check(_text_forms(value), "headers")
    if "HTTP_COOKIE" in request.META:
        _check(_query_dict_strings_from_pairs(request.COOKIES.items()), "cookies")

    _inspect_body(request)


def _query_dict_strings(query_dict):
    for key, values in query_dict.lists():
        yield key
        yield from values


def _query_dict_strings_from_pairs(pairs):
    for key, value in pairs:
        yield key
        yield value


def _declared_codec(request) -> str | None:
    charset = request.content_params.get("charset")
    if charset is None:
        return None
    try:
        return codecs.lookup(charset).name
    except LookupError:
        raise _Refused(UNDECODABLE, "body") from None


def _inspect_body(request) -> None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0:
        return  # Django reads no body without a length either
    content_type = (request.content_type or "").lower()
    codec = _declared_codec(request)

    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    fits_in_memory = limit is None or length <= limit
    if content_type in FORM_TYPES:
        if codec is not None and codec not in UTF8_CODECS:
            raise _Refused(NOT_UTF8, "form")
        if content_type == "multipart/form-data" and request.method == "POST":
            if fits_in_memory:
                # Read into memory first: request.POST then parses that copy, and a view that
                # reads request.body (the provider's webhook) still can. Parsing the stream
                # would consume it, and request.body would raise (a 500) for such a view.
                request.body  # noqa: B018
            _inspect_multipart(request)
            return
    if not fits_in_memory:
        # Too large to read here, and too large for the application as well: request.body
        # and request.POST raise RequestDataTooBig, which the 400/413 handlers answer.
        return
    body = request.body
    if content_type == "application/x-www-form-urlencoded":
        _inspect_urlencoded(body)
    else:
        _inspect_text(body, codec, content_type)


def _inspect_urlencoded(body: bytes) -> None:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise _Refused(NOT_UTF8, "form") from None
    _check([text], "form")
    _check(_query_dict_strings_from_pairs(pairs), "form")


def _inspect_multipart(request) -> None:
    try:
        post, files = request.POST, request.FILES
    except MultiPartParserError:
        raise _Refused(UNDECODABLE, "form") from None
    _check(_query_dict_strings(post), "form")
    for name, uploaded in files.lists():
        _check([name, *(file.name or "" for file in uploaded)], "form")


def _inspect_text(body: bytes, codec: str | None, content_type: str) -> None:
    """Any other body: text in its declared charset (else UTF-8, or the UTF-16/32 that JSON's
    own detection finds), and the JSON inside it."""
    # json.loads(bytes), which views use, guesses UTF-16 and UTF-32 (by byte order mark or
    # zero bytes) whatever was declared: undeclared bodies are read that way, and declared
    # ones that way too.
    guessed = codecs.lookup(json.detect_encoding(body)).name
    try:
        texts = [body.decode(codec or guessed)]
    except UnicodeDecodeError:
        raise _Refused(UNDECODABLE, "body") from None
    if codec is not None and codec != guessed:
        try:
            texts.append(body.decode(guessed))
        except UnicodeDecodeError:
            pass
    for text in texts:
        _check(_text_forms(text), "body")
        # Without a backslash every JSON string stands in the text as it is, between quotes
        # that end a run of digits: parsing would find nothing new.
        if "\\" in text and ("json" in content_type or text.lstrip()[:1] in ("{", "[")):
            _check(_json_strings(text), "JSON body")


def _json_strings(text: str):
    """Every string (keys and values) of the JSON document in `text`; none when it is not JSON
    (the view cannot parse it either, and the raw text was checked)."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# --- Answering --------------------------------------------------------------------------------


def _wants_json(request) -> bool:
    if request.path_info.startswith("/api/"):
        return True
    if "json" in (request.content_type or ""):
        return True
    return request.get_preferred_type(["text/html", "application/json"]) == "application/json"


def _back_url(request) -> str:
    """The page the visitor came from, when it is ours and carries no card data; else the
    admin's start for staff pages; else none (the page then points to the Back button)."""
    referer = request.headers.get("Referer", "")
    try:
        ours = bool(referer) and url_has_allowed_host_and_scheme(
            referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    except DisallowedHost:
        ours = False
    if ours and not any(contains_card_data(form) for form in _text_forms(referer)):
        return referer
    if request.path_info.startswith("/admin/"):
        return reverse("admin:index")
    return ""


def _refusal_response(request, refusal: Refusal) -> HttpResponse:
    if _wants_json(request):
        response = error_json(400, refusal.code, refusal.message)
    else:
        # Rendered without the request: no context processor runs (the session and the user
        # are not loaded, and must not be).
        html = render_to_string(
            "core/request_refused.html",
            {
                "status": 400,
                "code": refusal.code,
                "title": refusal.title,
                "message": refusal.message,
                "back_url": _back_url(request),
            },
        )
        response = HttpResponse(html, status=400)
    # SecurityMiddleware and XFrameOptionsMiddleware (placed before this one) add the headers
    # every page carries; these are the ones the hosted pages set themselves, with a stricter
    # policy.
    apply_hosted_headers(response, policy=REFUSAL_CSP)
    # django.request would log "Bad Request: <path>" for this 400, and the path may be what
    # was refused. log_response() skips a response marked as logged.
    response._has_been_logged = True
    return response
