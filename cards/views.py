"""Hosted pages: customers register a card. The card goes only to the provider's field."""

import hashlib
import re
import uuid

from django.conf import settings
from django.core.cache import caches
from django.http import Http404, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.http import urlsafe_base64_decode
from django.utils.translation import get_language, get_language_from_request
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from core.errors import domain_error_json, error_json
from core.hosted import hosted_page
from core.ratelimit import posts_rate_limited
from spaces.models import Space

from . import selectors, services
from .exceptions import CardsError, ProviderUnavailable
from .forms import CardRegistrationForm, InvitationRegistrationForm

# Per client IP, on every registration page and its setup-intent endpoints together.
registration_rate_limited = posts_rate_limited(
    scope="card-registration",
    limit_setting="CARD_REGISTRATION_RATE_LIMIT",
    window_setting="CARD_REGISTRATION_RATE_WINDOW",
    template="cards/rate_limited.html",
)


def _public_space(space_slug: str) -> Space:
    space = selectors.public_space_get(slug=space_slug)
    if space is None:
        raise Http404("No such registration page.")
    return space


def _invitation(invitation_ref: str, token: str):
    try:
        public_id = uuid.UUID(bytes=urlsafe_base64_decode(invitation_ref))
    except (ValueError, TypeError):
        public_id = None
    return services.card_invitation_check(public_id=public_id, token=token)


def _link_problem(request, error: CardsError):
    status = 404 if error.code == "invitation_invalid" else 410
    return render(request, "cards/link_problem.html", {"message": error.message}, status=status)


def _page(request, *, form, space, invitation=None, error=None, intent_url):
    sepa = {}
    if invitation is not None:
        # The SEPA step needs a known customer: offered on invitation pages only.
        kwargs = request.resolver_match.kwargs
        link = {"invitation_ref": kwargs["invitation_ref"], "token": kwargs["token"]}
        sepa = {
            "sepa_intent_url": reverse("cards:invitation_sepa_setup_intent", kwargs=link),
            "sepa_save_url": reverse("cards:invitation_sepa_debit", kwargs=link),
        }
    context = {
        **sepa,
        "form": form,
        "space": space,
        "invitation": invitation,
        "error": error,
        "intent_url": intent_url,
        "stripe_js_url": settings.STRIPE_JS_URL,
        "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
    }
    status = 400 if error or form.errors else 200
    return render(request, "cards/register.html", context, status=status)


CSRF_PLACEHOLDER = "csrf-token-placeholder-0f3a9c"


def _intent_url(space) -> str:
    return reverse("cards:setup_intent", kwargs={"space_slug": space.slug})


def _public_page(request, *, space):
    """The empty public page is the same for every visitor but for the CSRF token: render it
    once per process and space (as long as the space itself is cached), then put each
    visitor's token in. It is the hottest page a stranger can load."""
    cache = caches["fragments"]
    # One rendering per language too: LocaleMiddleware picked it from the browser.
    name_hash = hashlib.sha256(space.name.encode()).hexdigest()[:16]
    key = f"public-page:{space.pk}:{get_language()}:{name_hash}"
    html = cache.get(key)
    if html is None:
        html = render_to_string(
            "cards/register.html",
            {
                "form": CardRegistrationForm(),
                "space": space,
                "intent_url": _intent_url(space),
                "stripe_js_url": settings.STRIPE_JS_URL,
                "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
                "csrf_token": CSRF_PLACEHOLDER,
            },
        )
        cache.set(key, html, selectors.PUBLIC_SPACE_TTL)
    return HttpResponse(html.replace(CSRF_PLACEHOLDER, get_token(request)))


def _complete(request, *, form, space, invitation=None, intent_url):
    if not form.is_valid():
        return _page(request, form=form, space=space, invitation=invitation, intent_url=intent_url)
    try:
        registration = services.card_registration_complete(
            space=space,
            setup_intent_id=form.cleaned_data["setup_intent"],
            name=form.cleaned_data.get("name", ""),
            email=form.cleaned_data.get("email", ""),
            language=get_language_from_request(request),
            invitation=invitation,
        )
    except CardsError as error:
        form = form.__class__(
            initial={k: v for k, v in form.cleaned_data.items() if k != "setup_intent"}
        )
        return _page(
            request,
            form=form,
            space=space,
            invitation=invitation,
            error=error.message,
            intent_url=intent_url,
        )
    if registration.is_new:
        _remember_registration(request, registration)
    return redirect("cards:done", registration_ref=registration.public_id)


# The "registered" page names the customer's email and card: only the browser that made the
# registration may see it. The URL alone is not enough (it is shared, logged, bookmarked).
SESSION_REGISTRATIONS = "cards_registrations"
SESSION_REGISTRATIONS_KEPT = 5


def _remember_registration(request, registration) -> None:
    ref = str(registration.public_id)
    kept = [r for r in request.session.get(SESSION_REGISTRATIONS, []) if r != ref]
    request.session[SESSION_REGISTRATIONS] = [*kept, ref][-SESSION_REGISTRATIONS_KEPT:]


@hosted_page
@registration_rate_limited
@require_http_methods(["GET", "POST"])
def register(request, space_slug):
    space = _public_space(space_slug)
    if request.method == "POST":
        form = CardRegistrationForm(request.POST)
        return _complete(request, form=form, space=space, intent_url=_intent_url(space))
    return _public_page(request, space=space)


@hosted_page
@registration_rate_limited
@require_http_methods(["GET", "POST"])
def invitation(request, invitation_ref, token):
    try:
        invite = _invitation(invitation_ref, token)
    except CardsError as error:
        return _link_problem(request, error)
    # The invited customer is known: their language, not the browser's.
    with translation.override(invite.customer.preferred_language or get_language()):
        return _invitation_page(request, invite=invite, invitation_ref=invitation_ref, token=token)


def _invitation_page(request, *, invite, invitation_ref, token):
    intent_url = reverse(
        "cards:invitation_setup_intent",
        kwargs={"invitation_ref": invitation_ref, "token": token},
    )
    if request.method == "POST":
        form = InvitationRegistrationForm(request.POST)
        return _complete(
            request, form=form, space=invite.space, invitation=invite, intent_url=intent_url
        )
    return _page(
        request,
        form=InvitationRegistrationForm(),
        space=invite.space,
        invitation=invite,
        intent_url=intent_url,
    )


@hosted_page
@registration_rate_limited
@require_POST
def setup_intent(request, space_slug):
    space = _public_space(space_slug)
    return _setup_intent_response(space=space)


@hosted_page
@registration_rate_limited
@require_POST
def invitation_setup_intent(request, invitation_ref, token):
    try:
        invite = _invitation(invitation_ref, token)
    except CardsError as error:
        return domain_error_json(error, status=410)
    return _setup_intent_response(space=invite.space, invitation=invite)


SETUP_INTENT_ID = re.compile(r"seti_[A-Za-z0-9_]{1,250}")


def _sepa_status(error: CardsError, refused: int) -> int:
    return 503 if isinstance(error, ProviderUnavailable) else refused


@hosted_page
@registration_rate_limited
@require_POST
def invitation_sepa_setup_intent(request, invitation_ref, token):
    """A SetupIntent for a SEPA Direct Debit account, confirmed by the page's Stripe.js
    (confirmSepaDebitSetup): the IBAN goes to the provider only."""
    try:
        invite = _invitation(invitation_ref, token)
        intent = services.sepa_debit_setup_intent_start(invitation=invite)
    except CardsError as error:
        return domain_error_json(error, status=_sepa_status(error, 410))
    return JsonResponse({"client_secret": intent.client_secret})


@hosted_page
@registration_rate_limited
@require_POST
def invitation_sepa_debit(request, invitation_ref, token):
    """Save the confirmed SEPA account (POST setup_intent_id) as the customer's saved method."""
    try:
        invite = _invitation(invitation_ref, token)
    except CardsError as error:
        return domain_error_json(error, status=410)
    setup_intent_id = request.POST.get("setup_intent_id", "")
    if not SETUP_INTENT_ID.fullmatch(setup_intent_id):
        return error_json(400, "setup_intent_missing", _("No bank account was confirmed."))
    try:
        method = services.sepa_debit_method_add(invitation=invite, setup_intent_id=setup_intent_id)
    except CardsError as error:
        return domain_error_json(error, status=_sepa_status(error, 400))
    return JsonResponse(
        {"country": method.country, "bank_code": method.bank_code, "last4": method.last4},
        status=201,
    )


def _setup_intent_response(*, space, invitation=None):
    try:
        intent = services.registration_setup_intent_start(space=space, invitation=invitation)
    except CardsError as error:
        return domain_error_json(error, status=503)
    return JsonResponse({"client_secret": intent.client_secret})


@hosted_page
def done(request, registration_ref):
    # Another browser gets the same 404 as an unknown reference: it learns nothing, not even
    # that the registration exists.
    if str(registration_ref) not in request.session.get(SESSION_REGISTRATIONS, []):
        raise Http404("No such registration.")
    registration = selectors.card_registration_get(public_id=registration_ref)
    if registration is None:
        raise Http404("No such registration.")
    return render(request, "cards/done.html", {"registration": registration})
