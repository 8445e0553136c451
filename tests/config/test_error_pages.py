"""The project's error pages (config.views, handler400... in config/urls.py), with DEBUG off as
in production: styled, say what happened, link back; JSON under /api/; admin pages under
/admin/; the hosted pages' headers under /register/; the 500 page needs neither database nor
request."""

import pytest
from django.conf import settings
from django.test import Client, RequestFactory

from billing import services
from billing.models import ChargeIssue
from config import views
from spaces.roles import CLERK
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

ERROR_URLS = pytest.mark.urls("tests.config.error_urls")
SECRET = "the detail that must not be shown"


def assert_hosted_headers(response):
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "no-store"


def assert_styled_page(response, status, title):
    body = response.content.decode()
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    assert f"<h1>{title}</h1>" in body
    assert 'rel="stylesheet"' in body and "core/errors.css" in body
    assert 'id="error-message"' in body
    assert SECRET not in body


def test_error_pages_are_tested_as_in_production():
    assert settings.DEBUG is False


# --- 404 --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_missing_page_is_a_styled_404_that_offers_a_way_back(client):
    response = client.get("/no/such/page/", headers={"Referer": "http://testserver/healthz"})

    assert_styled_page(response, 404, "Page not found")
    assert response.templates[0].name == "404.html"
    assert 'href="http://testserver/healthz"' in response.content.decode()


@pytest.mark.django_db
def test_a_404_never_links_back_to_another_site(client):
    response = client.get("/no/such/page/", headers={"Referer": "https://evil.example/"})

    body = response.content.decode()
    assert response.status_code == 404
    assert "evil.example" not in body and "Back button" in body


@pytest.mark.django_db
def test_a_404_under_the_api_is_json(client):
    response = client.get("/api/v1/no-such-thing")

    assert response.status_code == 404
    assert response.json() == {"error": views.ERRORS[404][2], "code": "not_found"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/register/no-such-space/", "/register/a/b/c/"])
def test_a_404_in_the_hosted_area_carries_the_hosted_headers(client, path):
    response = client.get(path)

    assert_styled_page(response, 404, "Page not found")
    assert_hosted_headers(response)


# --- 403 --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_403_in_the_admin_is_an_admin_page_with_a_way_back(client):
    space = SpaceFactory(slug="shop")
    customer = CustomerFactory(space=space)
    PaymentCardFactory(customer=customer)
    issue = services.charge_issue_start(customer=customer, source=ChargeIssue.Source.STAFF)
    client.force_login(StaffUserFactory(username="clerk403", role=CLERK, spaces=[space]))

    # A clerk may not approve.
    response = client.get(f"/admin/billing/chargeissue/{issue.pk}/approval/")

    body = response.content.decode()
    assert response.status_code == 403
    assert [t.name for t in response.templates][:2] == [
        "admin/error_page.html",
        "admin/base_site.html",
    ]
    assert "Charging back office" in body  # the admin's header
    assert "<h1>Not allowed</h1>" in body and views.ERRORS[403][2] in body
    assert 'href="/admin/" id="error-back"' in body


@ERROR_URLS
@pytest.mark.django_db
def test_a_403_elsewhere_is_a_styled_page(client):
    assert_styled_page(client.get("/forbidden/"), 403, "Not allowed")


@ERROR_URLS
@pytest.mark.django_db
def test_a_403_under_the_api_is_json(client):
    response = client.get("/api/v1/forbidden/")

    assert response.status_code == 403
    assert response.json() == {"error": views.ERRORS[403][2], "code": "forbidden"}


@ERROR_URLS
@pytest.mark.django_db
def test_a_403_in_the_hosted_area_carries_the_hosted_headers(client):
    response = client.get("/register/forbidden/")

    assert_styled_page(response, 403, "Not allowed")
    assert_hosted_headers(response)


# --- 400 --------------------------------------------------------------------------------------


@ERROR_URLS
@pytest.mark.django_db
def test_a_400_is_a_styled_page_json_under_the_api_and_hosted_under_register(client):
    plain = client.get("/bad-request/")
    api = client.get("/api/v1/bad-request/")
    hosted = client.get("/register/bad-request/")

    assert_styled_page(plain, 400, "Bad request")
    assert api.status_code == 400
    assert api.json() == {"error": views.ERRORS[400][2], "code": "bad_request"}
    assert_styled_page(hosted, 400, "Bad request")
    assert_hosted_headers(hosted)


@pytest.mark.django_db
@pytest.mark.parametrize("charset", ["utf-16", "latin-1"])
def test_a_form_post_in_another_charset_is_a_400_page_not_a_500(client, charset):
    SpaceFactory(slug="shop")
    client.raise_request_exception = False
    body = "name=Kim Kunde&email=kim@example.test&setup_intent=seti_1".encode(charset)

    response = client.generic(
        "POST",
        "/register/shop/",
        body,
        content_type=f"application/x-www-form-urlencoded; charset={charset}",
    )

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "<h1>" in response.content.decode()
    assert_hosted_headers(response)


@pytest.mark.django_db
@pytest.mark.parametrize("charset", ["utf-16", "latin-1"])
def test_an_admin_form_post_in_another_charset_is_a_400_page(client, django_user_model, charset):
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.test", "x"))
    client.raise_request_exception = False

    response = client.generic(
        "POST",
        "/admin/cards/customer/add/",
        "name=Kim".encode(charset),
        content_type=f"application/x-www-form-urlencoded; charset={charset}",
    )

    # The card-number guard refuses a form it cannot read as UTF-8 before the admin does.
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert 'href="/admin/" id="error-back"' in response.content.decode()


@pytest.mark.django_db
def test_a_form_body_over_the_upload_limit_is_a_413_page(client):
    SpaceFactory(slug="shop")
    body = b"name=" + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)

    response = client.generic(
        "POST", "/register/shop/", body, content_type="application/x-www-form-urlencoded"
    )

    assert_styled_page(response, 413, "Request too large")
    assert_hosted_headers(response)


# --- 500 --------------------------------------------------------------------------------------


@ERROR_URLS
@pytest.mark.django_db
def test_a_crash_is_a_styled_500_page(client):
    client.raise_request_exception = False

    response = client.get("/crash/")

    assert_styled_page(response, 500, "Something went wrong")
    assert response.templates[0].name == "500.html"


@ERROR_URLS
@pytest.mark.django_db
def test_a_crash_under_the_api_is_json(client):
    client.raise_request_exception = False

    response = client.get("/api/v1/crash/")

    assert response.status_code == 500
    assert response.json() == {"error": views.ERRORS[500][2], "code": "server_error"}


@ERROR_URLS
@pytest.mark.django_db
def test_a_crash_in_the_hosted_area_carries_the_hosted_headers(client):
    client.raise_request_exception = False

    response = client.get("/register/crash/")

    assert_styled_page(response, 500, "Something went wrong")
    assert_hosted_headers(response)


# No django_db mark: any database access here fails the test.
@pytest.mark.parametrize("path", [None, "/somewhere/", "/register/shop/"])
def test_the_500_page_renders_without_database_or_request_context(path):
    request = RequestFactory().get(path) if path else None

    response = views.server_error(request)

    body = response.content.decode()
    assert response.status_code == 500
    assert "<h1>Something went wrong</h1>" in body and "core/errors.css" in body
    assert 'href="" id="error-back"' in body  # "Try again": needs no URL from the request


@pytest.mark.django_db
def test_an_admin_error_raised_before_the_user_is_known_is_still_a_page(client):
    # A middleware ahead of authentication refuses the request: no request.user exists.
    response = client.get("/admin/cards/customer/?q=%00")

    assert_styled_page(response, 400, "Bad request")
    assert 'href="/admin/" id="error-back"' in response.content.decode()


@pytest.mark.django_db
def test_a_form_without_its_csrf_token_is_a_styled_403_in_the_hosted_area():
    SpaceFactory(slug="shop")
    client = Client(enforce_csrf_checks=True)

    response = client.post("/register/shop/", {"name": "Kim", "email": "kim@example.test"})

    assert_styled_page(response, 403, "Not allowed")
    assert views.CSRF_MESSAGE in response.content.decode()
    assert_hosted_headers(response)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path, cookie",
    [
        ("/admin/login/", None),  # the CSRF cookie expired while the login form was open
        ("/admin/login/", "a" * 32),  # a cookie that does not match the form's token
        ("/admin/two-factor/verify/", None),
        ("/admin/billing/chargeissue/1/enter-amount/", None),  # a session that expired
    ],
)
def test_a_csrf_failure_of_a_visitor_not_logged_in_is_the_styled_403_page(path, cookie):
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    if cookie:
        client.cookies[settings.CSRF_COOKIE_NAME] = cookie

    response = client.post(path, {"username": "kim", "password": "x", "csrfmiddlewaretoken": "b"})

    # Not the admin's layout, which shows the user's menu: there is no user.
    assert_styled_page(response, 403, "Not allowed")
    assert response.templates[0].name == "403.html"
    assert views.CSRF_MESSAGE in response.content.decode()
    assert 'href="/admin/" id="error-back"' in response.content.decode()


@pytest.mark.django_db
def test_a_csrf_failure_of_staff_stays_in_the_admin():
    client = Client(enforce_csrf_checks=True)
    client.force_login(StaffUserFactory(username="clerk-csrf", role=CLERK, spaces=[SpaceFactory()]))

    response = client.post("/admin/billing/chargeissue/1/enter-amount/", {"amount": "1"})

    assert response.status_code == 403
    assert response.templates[0].name == "admin/error_page.html"
    assert views.CSRF_MESSAGE in response.content.decode()
