"""A refund in Chromium: a clerk requests part of a succeeded charge back on the charge's page,
an approver (the amount is above the space's threshold) approves it, it is refunded once at
the provider and the customer is told."""

import pytest
from django.core import mail
from playwright.sync_api import expect

from billing import services
from billing.models import ChargeIssue, Refund
from cards import services as card_services
from spaces.roles import APPROVER, CLERK
from tests.billing.conftest import VISA
from tests.billing.test_e2e_charge import _log_in, _log_out, _open_issue
from tests.conftest import confirm_setup_intent
from tests.factories import SpaceFactory, StaffUserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_clerk_requests_approver_approves_and_the_charge_is_refunded_once(
    live_server, page, localstripe
):
    space = SpaceFactory(name="Corner Shop", slug="corner-shop", default_currency="EUR")
    space.refund_threshold_minor = 1000  # 10.00 EUR: the 20.00 below needs an approver
    space.save()
    clerk = StaffUserFactory(username="carla", role=CLERK, spaces=[space])
    approver = StaffUserFactory(username="arne", role=APPROVER, spaces=[space])
    intent = card_services.registration_setup_intent_start(space=space)
    confirm_setup_intent(localstripe, intent.client_secret, VISA)
    registration = card_services.card_registration_complete(
        space=space, setup_intent_id=intent.id, name="Kim Kunde", email="kim@example.test"
    )
    issue = ChargeIssue.objects.get(customer=registration.customer)
    services.charge_amount_enter(
        issue=issue,
        acting_user=clerk,
        amount="49.90",
        currency="EUR",
        notification_subject="Your order 1234",
        notification_body="We charge your card for order 1234 today.",
    )
    services.charge_issue_approve(issue=issue, acting_user=approver)  # charged on commit
    issue.refresh_from_db()
    assert issue.state == ChargeIssue.State.SUCCEEDED
    mail.outbox.clear()

    # The clerk requests 20.00 EUR back.
    _log_in(page, live_server, "carla")
    _open_issue(page, live_server, issue)
    page.get_by_role("link", name="Request a refund").click()
    expect(page.locator("#refund-left")).to_have_text("49.90 EUR")
    page.fill("#id_amount", "60.00")
    page.fill("#id_reason", "One item arrived broken.")
    page.click("#submit-refund")
    expect(page.locator(".errornote")).to_be_visible()
    expect(page.locator(".field-amount")).to_contain_text("At most 49.90 EUR")
    page.fill("#id_amount", "20.00")
    page.click("#submit-refund")
    expect(page.locator(".messagelist")).to_contain_text("waits for an approver")
    expect(page.locator("#refunds .refund-state")).to_have_text("Awaiting approval")
    _log_out(page)

    # The approver approves it from the charge's page.
    _log_in(page, live_server, "arne")
    _open_issue(page, live_server, issue)
    refund = Refund.objects.get()
    page.click(f"#refund-approval-{refund.pk}")
    expect(page.locator("#refund-amount")).to_have_text("20.00 EUR")
    expect(page.locator("#refund-requested-by")).to_contain_text("carla")
    page.click("#approve-refund")
    expect(page.locator(".messagelist")).to_contain_text("was approved")
    expect(page.locator("#refunds .refund-state")).to_have_text("Refunded")
    expect(page.locator(".field-refunded_display")).to_contain_text("20.00 EUR (partially)")

    refund.refresh_from_db()
    assert (refund.state, refund.requested_by, refund.approved_by) == (
        Refund.State.SUCCEEDED,
        clerk,
        approver,
    )
    intent_id = issue.attempt.provider_payment_intent_id
    at_provider = [r for r in localstripe.list("refunds") if r["payment_intent"] == intent_id]
    assert [(r["amount"], r["status"]) for r in at_provider] == [(2000, "succeeded")]
    assert [m.subject for m in mail.outbox if m.to == ["kim@example.test"]] == [
        "Corner Shop: refund of €20.00"
    ]
