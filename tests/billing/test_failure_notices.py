"""A failed charge is never a dead end: the customer gets a clear notice in their language,
the staff a notice naming the decline reason and what to do."""

import pytest
from django.core import mail

from billing import services
from billing.models import ChargeIssue
from tests.billing.conftest import DECLINES_ON_CHARGE

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("de", "Ihre Bank hat die Zahlung abgelehnt. Es wurde kein Geld abgebucht."),
        ("en", "your bank declined the payment. No money was taken."),
    ],
)
def test_a_declined_charge_tells_the_customer_in_their_language_and_staff_what_to_do(
    space,
    clerk,
    approver,
    register_card,
    django_capture_on_commit_callbacks,
    language,
    expected,
    nothing_collects,
):
    registration = register_card(space, number=DECLINES_ON_CHARGE)
    registration.customer.preferred_language = language
    registration.customer.save()
    issue = ChargeIssue.objects.get(customer=registration.customer)
    services.charge_amount_enter(
        issue=issue,
        acting_user=clerk,
        amount="12.34",
        currency="EUR",
        notification_subject="Your order",
        notification_body="We charge your card on file.",
    )
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        services.charge_issue_approve(issue=issue, acting_user=approver)

    issue.refresh_from_db()
    assert issue.state == ChargeIssue.State.FAILED
    customer_mails = [m for m in mail.outbox if m.to == [issue.customer_email]]
    notice = customer_mails[-1]
    assert expected in notice.body
    assert "4242" not in notice.body and "0341" in notice.body  # last 4 of the card only
    assert len(customer_mails) == 2  # the notification before, then this notice: no receipt
    (staff,) = [m for m in mail.outbox if clerk.email in m.to]
    assert set(staff.to) == {clerk.email, approver.email}
    assert "Your card was declined." in staff.body and "card_declined" in staff.body
    assert "What to do:" in staff.body and "(1r.)" in staff.body
