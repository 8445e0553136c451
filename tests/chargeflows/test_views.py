"""The payment page behind a link: amount from the database; tampered, expired, replaced and
used links are refused with what the customer should do."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from billing import services as billing_services
from chargeflows import services
from chargeflows.models import ChargeFlowLevelConfiguration, ChargeFlowLevelPaymentLink
from tests.chargeflows.conftest import (
    DECLINES,
    approved_issue,
    one_level_flow,
    real_card,
    real_customer,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def link_path(space, clerk, approver, localstripe, django_capture_on_commit_callbacks):
    customer = real_customer(space)
    issue = approved_issue(customer, real_card(customer, DECLINES), clerk, approver)
    flow = one_level_flow(space, run_payment_link=True)
    ChargeFlowLevelConfiguration.objects.create(
        flow=flow, name="Second link", priority=2, period=timedelta(days=3), run_payment_link=True
    )
    with django_capture_on_commit_callbacks(execute=True):
        billing_services.charge_issue_send_to_collection(issue=issue, acting_user=approver)
    link = ChargeFlowLevelPaymentLink.objects.get()
    return services.payment_link_url(link).removeprefix("http://testserver")


def test_the_page_shows_what_is_owed_from_the_database(client, link_path):
    page = client.get(link_path)
    assert page.status_code == 200
    assert page.context["issue"].amount_display in page.content.decode()


@pytest.mark.parametrize("where", [-3, 12])
def test_a_tampered_link_is_refused(client, link_path, where):
    token = link_path.split("/")[2]
    changed = token[:where] + ("A" if token[where] != "A" else "B") + token[where + 1 :]
    page = client.get(link_path.replace(token, changed))
    assert page.status_code == 404
    assert "not valid" in page.content.decode()


def test_an_expired_link_is_refused_and_says_whom_to_contact(client, link_path):
    link = ChargeFlowLevelPaymentLink.objects.get()
    with time_machine.travel(link.expires_at + timedelta(seconds=1)):
        page = client.get(link_path)
    assert page.status_code == 410
    assert "expired" in page.content.decode() and "contact Shop" in page.content.decode()


def test_a_used_link_says_already_paid(client, link_path):
    ChargeFlowLevelPaymentLink.objects.update(used_at=timezone.now())
    page = client.get(link_path)
    assert page.status_code == 410 and "already been made" in page.content.decode()


def test_a_new_levels_link_retires_the_old_one(
    client, link_path, approver, django_capture_on_commit_callbacks
):
    case = ChargeFlowLevelPaymentLink.objects.get().level.case
    with django_capture_on_commit_callbacks(execute=True):
        services.case_level_start_next_now(case=case, acting_user=approver)

    assert client.get(link_path).status_code == 410
    newer = ChargeFlowLevelPaymentLink.objects.get(retired_at__isnull=True)
    assert client.get(services.payment_link_url(newer)).status_code == 200
