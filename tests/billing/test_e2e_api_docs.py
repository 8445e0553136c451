"""The API's docs page in Chromium: Swagger UI renders every operation from our own static
files, with the project's CSP, and asks nothing of any other host."""

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_docs_page_works_offline_under_its_csp(live_server, page):
    foreign, csp_violations = [], []
    ours = live_server.url

    def route(route):
        if route.request.url.startswith(ours):
            route.continue_()
        else:  # no network here, and the page must not need one
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.on(
        "console",
        lambda message: (
            "Content Security Policy" in message.text and csp_violations.append(message.text)
        ),
    )

    page.goto(f"{ours}/api/v1/docs")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Charging back office API")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible()
    paths = set(operations.all_inner_texts())
    assert {"/api/v1/charge-issues", "/api/v1/charge-issues/{id}/cancel"} <= {
        p.replace("\u200b", "") for p in paths
    }
    # Opening an operation shows its documented answers, the error shape included.
    page.locator(".opblock-post .opblock-summary").first.click()
    expect(page.locator(".responses-table").first).to_contain_text("409")
    assert foreign == [] and csp_violations == []
