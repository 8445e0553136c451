"""The hosted pages' headers (core.hosted): the CSP that lets in only Stripe.js, and the
headers every hosted page, its error pages and the card-number guard's refusal carry."""

from django.http import HttpResponse

from core.hosted import apply_hosted_headers, content_security_policy, hosted_page
from core.middleware import REFUSAL_CSP


def _directives(policy: str) -> dict[str, list[str]]:
    return {
        name: values for name, *values in (directive.split() for directive in policy.split(";"))
    }


def test_with_the_real_stripe_js_the_policy_follows_stripes_guidance(settings):
    settings.STRIPE_JS_URL = "https://js.stripe.com/v3/"
    settings.STRIPE_API_BASE = "https://api.stripe.com"

    policy = _directives(content_security_policy())

    assert policy["script-src"] == ["'self'", "https://js.stripe.com", "https://*.js.stripe.com"]
    assert policy["frame-src"] == [
        "'self'",
        "https://js.stripe.com",
        "https://*.js.stripe.com",
        "https://hooks.stripe.com",
    ]
    assert policy["connect-src"] == ["'self'", "https://api.stripe.com"]
    assert policy["default-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"] and policy["form-action"] == ["'self'"]


def test_with_a_stand_in_the_policy_names_only_its_origin(settings):
    settings.STRIPE_JS_URL = "http://127.0.0.1:8420/js.stripe.com/v3/"
    settings.STRIPE_API_BASE = "http://127.0.0.1:8420"

    policy = _directives(content_security_policy())

    assert policy["script-src"] == ["'self'", "http://127.0.0.1:8420"]
    assert policy["frame-src"] == ["'self'", "http://127.0.0.1:8420"]
    assert policy["connect-src"] == ["'self'", "http://127.0.0.1:8420"]
    assert "https://hooks.stripe.com" not in policy["frame-src"]


def test_a_settings_change_changes_the_policy_at_once(settings):
    settings.STRIPE_JS_URL = "http://127.0.0.1:8420/js.stripe.com/v3/"
    before = content_security_policy()
    settings.STRIPE_JS_URL = "http://127.0.0.1:8421/js.stripe.com/v3/"

    assert content_security_policy() != before
    assert "http://127.0.0.1:8421" in content_security_policy()


def _assert_private(response):
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "no-store"
    assert response["Permissions-Policy"] == "camera=(), microphone=(), geolocation=()"


def test_a_hosted_view_carries_the_policy_and_the_privacy_headers(rf):
    @hosted_page
    def page(request):
        return HttpResponse("hello")

    response = page(rf.get("/register/x/"))

    assert response.content == b"hello"
    assert response["Content-Security-Policy"] == content_security_policy()
    _assert_private(response)


def test_a_page_that_needs_less_gets_its_own_stricter_policy_and_the_same_other_headers():
    response = apply_hosted_headers(HttpResponse(status=400), policy=REFUSAL_CSP)

    assert response["Content-Security-Policy"] == REFUSAL_CSP
    assert _directives(REFUSAL_CSP)["default-src"] == ["'none'"]
    _assert_private(response)
