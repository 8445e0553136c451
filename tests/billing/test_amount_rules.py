"""Amounts mean money: the one parser, the provider's minimum charge and the charge date's
horizon, at the service and in the admin's amount entry form (the API: test_api.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import services
from billing.exceptions import InvalidAmount, InvalidInput
from billing.forms import ChargeAmountEntryForm
from billing.models import ChargeIssue
from tests.factories import CustomerFactory, PaymentCardFactory

State = ChargeIssue.State

FORM = {
    "amount": "12.50",
    "currency": "EUR",
    "notification_subject": "Your order",
    "notification_body": "We will charge your card.",
    "charge_date": "",
}


@pytest.fixture
def issue(space):
    customer = CustomerFactory(space=space)
    PaymentCardFactory(customer=customer)
    return services.charge_issue_start(customer=customer, source=ChargeIssue.Source.STAFF)


def _enter(issue, clerk, amount="12.50", currency="EUR", charge_date=None):
    return services.charge_amount_enter(
        issue=issue,
        acting_user=clerk,
        amount=amount,
        currency=currency,
        notification_subject="Your order",
        notification_body="We will charge your card.",
        charge_date=charge_date,
    )


def _unchanged(issue):
    fresh = ChargeIssue.objects.get(pk=issue.pk)
    return (
        fresh.state == State.AWAITING_AMOUNT
        and fresh.amount_minor is None
        and (fresh.events.count() == 1)
    )


# --- Service ----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("0.49", "EUR", "smallest charge our payment provider accepts in EUR: 0.50 EUR"),
        ("0.29", "GBP", "smallest charge our payment provider accepts in GBP: 0.30 GBP"),
        ("49", "JPY", "smallest charge our payment provider accepts in JPY: 50 JPY"),
        ("2.99", "SEK", "smallest charge our payment provider accepts in SEK: 3.00 SEK"),
    ],
)
def test_the_service_refuses_amounts_below_the_providers_minimum(
    issue, clerk, amount, currency, message
):
    with pytest.raises(InvalidAmount, match=message) as refused:
        _enter(issue, clerk, amount=amount, currency=currency)

    assert refused.value.field == "amount"
    assert _unchanged(issue)


@pytest.mark.django_db
@pytest.mark.parametrize(("amount", "currency"), [("0.50", "EUR"), ("0.30", "GBP"), ("50", "JPY")])
def test_the_service_accepts_the_minimum_itself(issue, clerk, amount, currency):
    entered = _enter(issue, clerk, amount=amount, currency=currency)

    assert entered.state == State.AWAITING_APPROVAL


@pytest.mark.django_db
@pytest.mark.parametrize("amount", [" 12.50", "12.50 ", "１２.５０", "١٢.٥٠"])
def test_the_service_refuses_spaces_and_other_scripts_digits(issue, clerk, amount):
    with pytest.raises(InvalidAmount) as refused:
        _enter(issue, clerk, amount=amount)

    assert refused.value.field == "amount"
    assert _unchanged(issue)


@pytest.mark.django_db
def test_the_service_refuses_a_charge_date_more_than_a_year_ahead(issue, clerk):
    with pytest.raises(InvalidInput, match="more than a year ahead") as refused:
        _enter(issue, clerk, charge_date=timezone.now() + timedelta(days=367))

    assert refused.value.field == "charge_date"
    assert _unchanged(issue)


@pytest.mark.django_db
def test_the_service_accepts_a_charge_date_within_the_year(issue, clerk):
    when = timezone.now() + timedelta(days=365)

    entered = _enter(issue, clerk, charge_date=when)

    assert entered.state == State.AWAITING_APPROVAL and entered.charge_date == when


# --- The admin's form -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("１２.５０", "Enter the amount as a number, e.g. 12.50."),
        ("١٢.٥٠", "Enter the amount as a number, e.g. 12.50."),
        ("12.50\u0660", "Enter the amount as a number, e.g. 12.50."),
        (" 12.50", "Enter the amount without spaces around it, e.g. 12.50."),
        ("12.50 ", "Enter the amount without spaces around it, e.g. 12.50."),
        ("1e3", "Enter the amount as a number, e.g. 12.50."),
        ("12.345", "EUR amounts have at most 2 decimal places."),
        ("", "This field is required."),
        ("12\x0050", "Null characters are not allowed."),
    ],
)
def test_the_amount_field_refuses_what_the_api_refuses(amount, message):
    form = ChargeAmountEntryForm({**FORM, "amount": amount})

    assert not form.is_valid()
    assert form.errors["amount"] == [message]


def test_the_amount_field_keeps_the_text_for_the_one_parser():
    form = ChargeAmountEntryForm({**FORM, "amount": "12.50"})

    assert form.is_valid(), form.errors
    assert form.cleaned_data["amount"] == "12.50"
