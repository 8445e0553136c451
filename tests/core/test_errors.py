"""Domain errors (core.errors): one base with a code, a user-safe message and a field, and the
helpers that show any app's refusal the same way in forms, the admin's messages and JSON."""

import json

import pytest
from django import forms
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.test import RequestFactory

from billing.exceptions import BillingError, InvalidAmount, SelfApprovalRefused
from cards.exceptions import CardsError, InvitationExpired
from core.errors import (
    DomainError,
    domain_error_json,
    error_json,
    form_add_domain_error,
    message_refusal,
)
from core.money import MoneyError, to_minor
from spaces.services import SpaceError
from spaces.twofactor import TwoFactorError


def test_a_subclass_carries_its_own_code_and_message_and_a_raise_may_override_them():
    default = InvitationExpired()
    overridden = InvitationExpired("Ask for a new link.", code="expired_again", field="link")

    assert (default.code, default.message, default.field) == (
        "invitation_expired",
        "This link has expired. Please ask us to send you a new one.",
        None,
    )
    assert str(default) == default.message
    assert (overridden.code, overridden.message, overridden.field) == (
        "expired_again",
        "Ask for a new link.",
        "link",
    )
    assert str(overridden) == "Ask for a new link."
    # An override on one raise leaves the class (and the next raise) as it was.
    assert InvitationExpired().code == "invitation_expired"


def test_empty_overrides_keep_the_defaults():
    error = SelfApprovalRefused("", code="")

    assert error.code == "self_approval"
    assert error.message.startswith("You entered this amount")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BillingError(), "billing_error"),
        (CardsError(), "cards_error"),
        (SpaceError(), "space_error"),
        (TwoFactorError("invalid_token", "That code is not valid."), "invalid_token"),
        (MoneyError("Enter the amount as a number, e.g. 12.50."), "invalid_amount"),
        (DomainError(), "domain_error"),
    ],
)
def test_every_apps_errors_are_domain_errors_with_a_code_and_a_message(error, code):
    assert isinstance(error, DomainError)
    assert error.code == code
    assert error.message and str(error) == error.message


def test_two_factor_errors_keep_their_code_then_message_signature():
    error = TwoFactorError("own_device", "Another admin must reset your own second factor.")

    assert error.code == "own_device"
    assert error.message == "Another admin must reset your own second factor."


def test_a_money_error_is_still_a_value_error_about_the_amount_field():
    with pytest.raises(ValueError, match="at most 2 decimal places") as raised:
        to_minor("1.234", "EUR")

    assert isinstance(raised.value, DomainError)
    assert raised.value.field == "amount" and raised.value.code == "invalid_amount"


class _StepForm(forms.Form):
    amount = forms.CharField()
    comment = forms.CharField(required=False)


def test_a_refusal_is_shown_next_to_the_field_it_names_else_above_the_form():
    form = _StepForm({"amount": "12", "comment": ""})
    assert form.is_valid()

    form_add_domain_error(form, InvalidAmount("Too small.", field="amount"))
    form_add_domain_error(form, SelfApprovalRefused())
    form_add_domain_error(form, BillingError("Not here.", field="no_such_field"))

    assert form.errors["amount"] == ["Too small."]
    assert form.non_field_errors() == [SelfApprovalRefused.message, "Not here."]
    assert "comment" not in form.errors


def test_json_errors_have_one_shape():
    plain = error_json(429, "rate_limited", "Slow down.", retry_after=3)
    refusal = domain_error_json(CardsError(code="provider_unavailable"), status=503)

    assert plain.status_code == 429
    assert json.loads(plain.content) == {
        "error": "Slow down.",
        "code": "rate_limited",
        "retry_after": 3,
    }
    assert refusal.status_code == 503
    assert json.loads(refusal.content) == {
        "error": CardsError.message,
        "code": "provider_unavailable",
    }


def test_staff_see_the_refusal_message_naming_the_object_when_there_is_one():
    request = RequestFactory().post("/admin/")
    request.session = SessionStore()
    request._messages = FallbackStorage(request)

    message_refusal(request, SpaceError("You are not allowed to change this space."))
    message_refusal(request, BillingError("Already revoked."), subject="bo_abc123")

    shown = [(m.level_tag, m.message) for m in get_messages(request)]
    assert shown == [
        ("error", "You are not allowed to change this space."),
        ("error", "bo_abc123: Already revoked."),
    ]
