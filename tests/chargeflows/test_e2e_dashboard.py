"""A clerk opens the space's dashboard in Chromium: every chart is drawn by the Chart.js that
ships inside django-unfold, from the page's own static files, with no script error."""

from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from spaces.roles import CLERK
from tests.chargeflows.dashboard_data import fill_dashboard_data
from tests.factories import DEFAULT_PASSWORD, PaymentCardFactory, SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOT = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "dashboard.png"


def test_the_dashboard_draws_its_charts(live_server, page):
    space = SpaceFactory(name="Shop", slug="shop")
    card = PaymentCardFactory(customer__space=space)
    fill_dashboard_data(space, card, 30)
    clerk = StaffUserFactory(username="clerk1", role=CLERK, spaces=[space])
    problems, requests = [], []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", clerk.username)
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.click("[type=submit]")
    expect(page.locator("#id_password")).to_have_count(0)
    # Only what the dashboard's own pages log counts (the login page asks for a favicon).
    problems.clear()
    requests.clear()
    page.goto(live_server.url + reverse("admin:chargeflows_dashboard_changelist"))
    page.click("text=Open the dashboard")

    expect(page.locator("#space-dashboard")).to_contain_text("Dashboard of Shop")
    charts = page.locator("canvas.chart")
    # Two currencies' amounts, open charges, collections, two recovery rates.
    expect(charts).to_have_count(6)
    drawn = page.evaluate(
        """() => typeof Chart === "function" &&
            [...document.querySelectorAll("canvas.chart")].map(
              (canvas) => Chart.getChart(canvas)?.data.datasets.length ?? 0)"""
    )
    assert drawn == [2, 2, 1, 1, 1, 1]
    # Drawn, not only created: the canvas has non-blank pixels.
    painted = page.evaluate(
        """() => [...document.querySelectorAll("canvas.chart")].every((canvas) => {
              const data = canvas.getContext("2d")
                .getImageData(0, 0, canvas.width, canvas.height).data;
              return data.some((value) => value !== 0);
            })"""
    )
    assert painted
    assert problems == []
    # Nothing came from the network: every request went to the test server.
    assert all(url.startswith(live_server.url) for url in requests), requests

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.screenshot(path=str(SCREENSHOT), full_page=True)
