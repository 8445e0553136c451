import json
import logging
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from cards import services
from cards.models import Customer, PaymentCard
from core.hosted import content_security_policy
from tests.card_data import card_numbers_in_database
from tests.conftest import confirm_setup_intent
from tests.factories import CustomerFactory, SpaceFactory

pytestmark = pytest.mark.django_db

CARD_NUMBERS = ["4242424242424242", "4242 4242 4242 4242", "4242-4242-4242-4242", "378282246310005"]


@pytest.fixture
def space():
    return SpaceFactory(name="Corner Shop", slug="corner-shop")


def _page_url(space):
    return reverse("cards:register", kwargs={"space_slug": space.slug})


def test_public_page_loads_stripe_js_under_a_strict_policy(client, space, settings):
    response = client.get(_page_url(space))

    assert response.status_code == 200
    html = response.content.decode()
    assert f'<script src="{settings.STRIPE_JS_URL}"></script>' in html
    assert "<script>" not in html  # no inline scripts: the policy would block them anyway
    policy = response["Content-Security-Policy"]
    stripe_origin = settings.STRIPE_JS_URL.split("/js.stripe.com")[0]
    assert f"script-src 'self' {stripe_origin};" in policy
    assert f"frame-src 'self' {stripe_origin};" in policy
    assert "frame-ancestors 'none'" in policy
    assert 'name="csrfmiddlewaretoken"' in html and response.cookies.get("csrftoken")


def test_unknown_or_closed_spaces_have_no_public_page(client, space):
    assert client.get("/register/no-such-space/").status_code == 404
    space.public_card_registration = False
    space.save()
    assert client.get(_page_url(space)).status_code == 404


def test_setup_intent_endpoint_returns_only_a_client_secret(client, space, localstripe):
    response = client.post(reverse("cards:setup_intent", kwargs={"space_slug": space.slug}))

    assert response.status_code == 200
    assert set(response.json()) == {"client_secret"}
    assert response.json()["client_secret"].startswith("seti_")
    assert (
        client.get(reverse("cards:setup_intent", kwargs={"space_slug": space.slug})).status_code
        == 405
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "A", "email": "a@example.test"}, "Your card was not confirmed"),
        ({"name": "A", "email": "not-an-email", "setup_intent": "seti_x"}, "valid email"),
        ({"name": "", "email": "a@example.test", "setup_intent": "seti_x"}, "required"),
        ({"name": "A", "email": "a@example.test", "setup_intent": "<script>"}, "Not a card setup"),
        (
            {"name": "A", "email": "a@example.test", "setup_intent": "seti_unknown"},
            "could not be saved",
        ),
    ],
)
def test_bad_submissions_get_a_clear_message_and_change_nothing(client, space, data, message):
    response = client.post(_page_url(space), data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Customer.objects.exists()


def test_a_confirmed_submission_redirects_to_the_confirmation(client, space, localstripe):
    secret = client.post(reverse("cards:setup_intent", kwargs={"space_slug": space.slug})).json()
    seti = confirm_setup_intent(localstripe, secret["client_secret"], "4242424242424242")["id"]

    response = client.post(
        _page_url(space), {"name": "Al", "email": "al@example.test", "setup_intent": seti}
    )

    assert response.status_code == 302
    done = client.get(response.url)
    assert "Visa ending in 4242" in done.content.decode()
    assert PaymentCard.objects.get().customer.email == "al@example.test"


def test_unknown_confirmation_page_is_404(client):
    assert client.get("/register/done/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_registration_attempts_are_rate_limited_per_ip(client, space, settings):
    settings.CARD_REGISTRATION_RATE_LIMIT = 2
    data = {"name": "A", "email": "a@example.test"}

    statuses = [client.post(_page_url(space), data).status_code for _ in range(3)]
    blocked = client.post(_page_url(space), data)
    other_ip = client.post(_page_url(space), data, REMOTE_ADDR="10.9.8.7")

    assert statuses == [400, 400, 429]
    assert blocked.status_code == 429 and "try again" in blocked.content.decode()
    assert int(blocked["Retry-After"]) > 0
    assert other_ip.status_code == 400  # another client is not blocked
    assert client.get(_page_url(space)).status_code == 200  # reading the page is not limited


@pytest.mark.parametrize("number", CARD_NUMBERS)
def test_a_form_post_carrying_a_card_number_is_refused_without_trace(
    client, space, number, caplog, capfd
):
    caplog.set_level(logging.DEBUG)

    response = client.post(_page_url(space), {"name": f"Card {number}", "email": "x@example.test"})

    assert response.status_code == 400
    assert "card number" in response.content.decode()
    assert number not in response.content.decode()
    assert not Customer.objects.exists()
    assert card_numbers_in_database() == []
    captured = capfd.readouterr()
    for output in (caplog.text, captured.out, captured.err):
        assert number not in output and number.replace(" ", "").replace("-", "") not in output


def test_card_numbers_are_refused_in_json_bodies_query_strings_and_other_endpoints(client, space):
    json_response = client.post(
        reverse("cards:setup_intent", kwargs={"space_slug": space.slug}),
        data=json.dumps({"nested": {"pan": "5555555555554444"}}),
        content_type="application/json",
    )
    query_response = client.get(_page_url(space), {"q": "4242-4242-4242-4242"})
    admin_response = client.post("/admin/login/", {"username": "4111111111111111", "password": "x"})

    assert json_response.status_code == 400
    assert json_response.json()["code"] == "card_number_refused"
    assert query_response.status_code == 400
    assert admin_response.status_code == 400


def test_numbers_that_are_not_card_numbers_pass(client, space):
    # 16 digits failing the Luhn check, and a 12-digit order number.
    response = client.post(
        _page_url(space), {"name": "Order 1234567812345678 123456789012", "email": "a@example.test"}
    )

    assert response.status_code == 400
    assert "Your card was not confirmed" in response.content.decode()


def _invitation_path(invitation):
    return services.card_invitation_url(invitation).removeprefix("http://testserver")


def test_invitation_page_names_the_customer(client):
    invitation = services.card_invitation_send(
        customer=CustomerFactory(name="Ina Vite"), acting_user=None
    )

    response = client.get(_invitation_path(invitation))

    assert response.status_code == 200
    assert "Ina Vite" in response.content.decode()
    assert 'id="id_name"' not in response.content.decode()


def test_tampered_expired_and_used_invitation_links_get_a_clear_page(client):
    invitation = services.card_invitation_send(customer=CustomerFactory(), acting_user=None)
    path = _invitation_path(invitation)

    tampered = client.get(path[:-3] + "abc/")
    garbage = client.get("/register/invite/not-base64!/1-2/")
    invitation.used_at = timezone.now()
    invitation.save()
    used = client.get(path)
    invitation.used_at = None
    invitation.expires_at = timezone.now() - timedelta(minutes=1)
    invitation.save()
    expired = client.get(_invitation_path(invitation))

    assert tampered.status_code == 404 and "not valid" in tampered.content.decode()
    assert garbage.status_code == 404 and "not valid" in garbage.content.decode()
    assert used.status_code == 410 and "already been used" in used.content.decode()
    assert expired.status_code == 410 and "expired" in expired.content.decode()
    intent = client.post(path.rstrip("/") + "/setup-intent/")
    assert intent.status_code == 410 and "error" in intent.json()


def test_the_page_carries_exactly_one_csrf_token_and_each_visitor_gets_their_own(space):
    from django.test import Client

    pages = [Client().get(_page_url(space)).content.decode() for _ in range(2)]

    tokens = [page.count('name="csrfmiddlewaretoken"') for page in pages]
    assert tokens == [1, 1]
    assert pages[0] != pages[1]  # the cached page gets each visitor's own masked token


# --- Issue 7 §5: customer pages ---------------------------------------------------------------


def _invitation_page_setup_intent(client, localstripe, invitation, number="4242424242424242"):
    path = _invitation_path(invitation)
    secret = client.post(path.rstrip("/") + "/setup-intent/").json()["client_secret"]
    return path, confirm_setup_intent(localstripe, secret, number)["id"]


def test_a_setup_intent_registered_through_one_invitation_is_refused_on_another_page(
    client, localstripe
):
    space = SpaceFactory()
    anna = CustomerFactory(space=space, name="Anna", email="anna@example.test")
    bert = CustomerFactory(space=space, name="Bert", email="bert@example.test")
    invitation_a = services.card_invitation_send(customer=anna, acting_user=None)
    invitation_b = services.card_invitation_send(customer=bert, acting_user=None)
    path_a, seti = _invitation_page_setup_intent(client, localstripe, invitation_a)
    assert client.post(path_a, {"setup_intent": seti}).status_code == 302
    provider_customers = len(localstripe.list("customers"))

    stranger = Client()
    to_b = stranger.post(_invitation_path(invitation_b), {"setup_intent": seti})
    to_public = stranger.post(
        _page_url(space), {"name": "Bert", "email": "anna@example.test", "setup_intent": seti}
    )

    for response in (to_b, to_public):
        html = response.content.decode()
        assert response.status_code == 400
        assert "made on another registration page" in html
        assert "anna@example.test" not in html.replace('value="anna@example.test"', "")
        assert "4242" not in html
    invitation_b.refresh_from_db()
    assert invitation_b.used_at is None and not bert.cards.exists()
    assert PaymentCard.objects.count() == 1 and Customer.objects.count() == 2
    assert len(localstripe.list("customers")) == provider_customers


def test_the_registered_page_shows_email_and_card_only_to_the_browser_that_registered(
    client, space, localstripe
):
    secret = client.post(reverse("cards:setup_intent", kwargs={"space_slug": space.slug})).json()
    seti = confirm_setup_intent(localstripe, secret["client_secret"], "4242424242424242")["id"]
    data = {"name": "Al", "email": "al@example.test", "setup_intent": seti}
    done_url = client.post(_page_url(space), data).url

    other = Client()
    seen_by_other = other.get(done_url)
    # Replaying the registering form does not hand the page to another browser either.
    replayed = other.post(_page_url(space), data)
    seen_after_replay = other.get(replayed.url)
    seen_by_owner = client.get(done_url)

    for response in (seen_by_other, seen_after_replay):
        assert response.status_code == 404
        assert b"al@example.test" not in response.content and b"4242" not in response.content
    assert replayed.status_code == 302 and replayed.url == done_url
    assert seen_by_owner.status_code == 200
    assert (
        b"al@example.test" in seen_by_owner.content and b"ending in 4242" in seen_by_owner.content
    )
    assert PaymentCard.objects.count() == 1


def test_an_expired_card_is_refused_on_the_page_and_nothing_is_saved(client, space, localstripe):
    secret = client.post(reverse("cards:setup_intent", kwargs={"space_slug": space.slug})).json()
    seti = confirm_setup_intent(
        localstripe, secret["client_secret"], "4242424242424242", exp_month=1, exp_year=2020
    )["id"]

    response = client.post(
        _page_url(space), {"name": "Old", "email": "old@example.test", "setup_intent": seti}
    )

    assert response.status_code == 400
    assert "This card expired in 01/20." in response.content.decode()
    assert not Customer.objects.exists() and not PaymentCard.objects.exists()
    assert not [c for c in localstripe.list("customers") if c["email"] == "old@example.test"]


def test_with_the_real_stripe_js_the_page_loads_it_under_core_hosteds_policy(
    client, space, settings
):
    # What the policy holds for Stripe's and for the stand-in's origins: tests/core/test_hosted.py.
    settings.STRIPE_JS_URL = "https://js.stripe.com/v3/"
    settings.STRIPE_API_BASE = "https://api.stripe.com"

    response = client.get(_page_url(space))

    assert response["Content-Security-Policy"] == content_security_policy()
    assert "https://hooks.stripe.com" in response["Content-Security-Policy"]
    assert '<script src="https://js.stripe.com/v3/"></script>' in response.content.decode()


def test_link_problem_and_rate_limit_pages_carry_the_hosted_headers(client, space, settings):
    settings.CARD_REGISTRATION_RATE_LIMIT = 1
    invitation = services.card_invitation_send(customer=CustomerFactory(), acting_user=None)
    path = _invitation_path(invitation)
    intent_url = reverse("cards:setup_intent", kwargs={"space_slug": space.slug})

    link_problem = client.get(path[:-3] + "abc/")
    link_problem_json = client.post(path[:-3] + "abc/setup-intent/")
    client.post(_page_url(space), {"name": "A", "email": "a@example.test"})
    page_limited = client.post(_page_url(space), {"name": "A", "email": "a@example.test"})
    intent_limited = client.post(intent_url)

    assert link_problem.status_code == 404 and link_problem_json.status_code == 410
    assert page_limited.status_code == 429 and intent_limited.status_code == 429
    expected = client.get(_page_url(space))["Content-Security-Policy"]
    for response in (link_problem, link_problem_json, page_limited, intent_limited):
        assert response["Content-Security-Policy"] == expected
        assert response["Cache-Control"] == "no-store"
        assert response["X-Content-Type-Options"] == "nosniff"
