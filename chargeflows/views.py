"""The hosted payment page behind a level's payment link. Amount and merchant come from the
database; the token only names the link. The card (or the IBAN of a SEPA Direct Debit) goes only
to the provider."""

from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from core.hosted import hosted_page

from . import selectors, services
from .exceptions import ChargeFlowError, LinkRefused
from .models import ChargeFlowLevelPaymentLink

STATUS = {"link_invalid": 404, "link_used": 410, "link_retired": 410, "link_expired": 410}


def _refused(request, error: LinkRefused):
    with translation.override(error.language or None):
        return render(
            request,
            "chargeflows/link_problem.html",
            {"message": error.message, "code": error.code},
            status=STATUS.get(error.code, 410),
        )


# The links this browser was told to wait for ("being processed": a charge under way, maybe
# another tab's). A paid link shows its receipt, rather than "already paid", only to such a
# browser, so the waiting tab reloads into the receipt. The URL alone is not enough (it is
# emailed, forwarded, logged).
SESSION_LINKS = "chargeflows_waiting_links"
SESSION_LINKS_KEPT = 5


def _remember_link(request, link) -> None:
    kept = [pk for pk in request.session.get(SESSION_LINKS, []) if pk != link.pk]
    request.session[SESSION_LINKS] = [*kept, link.pk][-SESSION_LINKS_KEPT:]


def _paid_here(request, token):
    """The paid link a token names, if this browser was told to wait for its payment."""
    link = selectors.payment_link_paid(token=token)
    if link is None or link.pk not in request.session.get(SESSION_LINKS, []):
        return None
    return link


def in_customer_language(view):
    """Pages in the language of the customer the link is for (the request's otherwise)."""

    @wraps(view)
    def wrapped(request, token, *args, **kwargs):
        try:
            link = services.payment_link_check(token=token)
        except LinkRefused as error:
            paid = (
                request.method == "GET" and error.code == "link_used" and _paid_here(request, token)
            )
            if paid:
                with translation.override(error.language or None):
                    return _receipt(request, paid)
            return _refused(request, error)
        with translation.override(link.level.case.issue.customer.preferred_language or "en"):
            return view(request, token, link, *args, **kwargs)

    return wrapped


def _page(request, link, token, *, error=None, status=200, client_secret="", keep_card=False):
    case = link.level.case
    return render(
        request,
        "chargeflows/pay.html",
        {
            "space": case.space,
            "issue": case.issue,
            "link": link,
            "error": error,
            "client_secret": client_secret,
            "keep_card": keep_card,
            "intent_url": reverse("chargeflows:setup_intent", kwargs={"token": token}),
            "sepa_intent_url": reverse("chargeflows:sepa_setup_intent", kwargs={"token": token}),
            "stripe_js_url": settings.STRIPE_JS_URL,
            "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
        },
        status=status,
    )


@hosted_page
@require_http_methods(["GET", "POST"])
@in_customer_language
def pay(request, token: str, link):
    if request.method == "GET":
        attempt = selectors.payment_link_attempt(link=link)
        waiting = services.payment_link_waiting(link=link, attempt=attempt)
        if waiting:
            return _processing(request, link, token, waiting)
        return _page(request, link, token)
    setup_intent_id = request.POST.get("setup_intent", "")
    authenticated = request.POST.get("authenticated") == "1"
    keep_card = request.POST.get("keep_card") == "on"
    if not authenticated and (
        not setup_intent_id.startswith("seti_") or len(setup_intent_id) > 255
    ):
        return _page(request, link, token, error=_("Enter your card to pay."), status=400)
    try:
        attempt = services.payment_link_pay(
            link=link, setup_intent_id=setup_intent_id, keep_method=keep_card
        )
    except ChargeFlowError as error:
        return _page(request, link, token, error=error.message, status=400)
    link = ChargeFlowLevelPaymentLink.objects.select_related(
        "level__case__issue", "level__case__space"
    ).get(pk=link.pk)
    # Another tab's payment (or this one's, whose outcome is not in yet) is under way: wait
    # for it, never "did not go through" while it may still go through.
    waiting = services.payment_link_waiting(link=link, attempt=attempt, submitted=True)
    if waiting:
        return _processing(request, link, token, waiting)
    secret = attempt and services.payment_link_authentication_secret(attempt=attempt)
    if link.used_at is None and secret:
        # The card asks for 3-D Secure: the page completes it, then posts back.
        return _page(request, link, token, client_secret=secret, keep_card=keep_card)
    if link.used_at is None:
        message = (
            attempt.failure_message
            if attempt is not None and attempt.failure_message
            else _("Your payment did not go through. Please try another card.")
        )
        return _page(request, link, token, error=message, status=402)
    return _receipt(request, link)


def _receipt(request, link):
    case = link.level.case
    return render(
        request,
        "chargeflows/receipt.html",
        {"space": case.space, "issue": case.issue, "link": link},
    )


# A charge under way settles within seconds (or the reconciler's few minutes): the page reloads
# itself into the receipt. A SEPA debit takes days: that page does not reload.
PROCESSING_RELOAD_SECONDS = 3


def _processing(request, link, token, waiting: str):
    """Nothing to do but wait (services.payment_link_waiting): a SEPA debit the bank is
    processing (the level and the link wait too, until the provider's webhook or the
    reconciler settles it), or a charge under way, begun by this tab or another."""
    if waiting == "payment":
        _remember_link(request, link)
    case = link.level.case
    return render(
        request,
        "chargeflows/processing.html",
        {
            "space": case.space,
            "issue": case.issue,
            "link": link,
            "waiting": waiting,
            "reload_seconds": PROCESSING_RELOAD_SECONDS,
            "pay_url": reverse("chargeflows:pay", kwargs={"token": token}),
        },
        status=202,
    )


def _setup_intent_response(link, payment_method_type: str):
    try:
        client_secret = services.payment_link_setup_intent(
            link=link, payment_method_type=payment_method_type
        )
    except LinkRefused as error:
        return JsonResponse({"error": error.message, "code": error.code}, status=410)
    return JsonResponse({"client_secret": client_secret})


@hosted_page
@require_POST
@in_customer_language
def setup_intent(request, token: str, link):
    return _setup_intent_response(link, "card")


@hosted_page
@require_POST
@in_customer_language
def sepa_setup_intent(request, token: str, link):
    """A SetupIntent for a SEPA Direct Debit account, confirmed by the page's Stripe.js
    (confirmSepaDebitSetup): the IBAN goes to the provider only."""
    return _setup_intent_response(link, "sepa_debit")
