"""Forms of the admin steps. They check input shape only; the services decide what is allowed
(amount rules, states, four eyes) and their BillingError is shown on the form
(core.errors.form_add_domain_error)."""

from django import forms
from django.conf import settings
from unfold.widgets import INPUT_CLASSES, SELECT_CLASSES, TEXTAREA_CLASSES

from core import money

from .models import ChargeIssue


class ThemedForm(forms.Form):
    """A step form whose inputs look like the rest of the admin (django-unfold's classes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            widget = field.widget
            if isinstance(widget, forms.Textarea):
                classes = TEXTAREA_CLASSES
            elif isinstance(widget, forms.Select):
                classes = SELECT_CLASSES
            else:
                classes = INPUT_CLASSES
            widget.attrs["class"] = " ".join(classes)


class ChargeAmountEntryForm(ThemedForm):
    """1. Charge amount entry: what is new for this charge; customer data is inherited."""

    # A text input, not type=number: browsers would silently reformat or refuse "12,50" or
    # "12.345" before the service could say what is wrong with it. Text, not a DecimalField:
    # Decimal reads "１２.５０" or " 12.5 " as 12.50, which the API refuses; the amount is
    # checked by money.to_minor, the one parser (see clean()), and kept as the text typed.
    amount = forms.CharField(
        max_length=40,
        strip=False,
        help_text="In the currency's units, e.g. 49.90 for EUR or 500 for JPY.",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    currency = forms.ChoiceField(choices=[(code, code) for code in money.CURRENCIES])
    notification_subject = forms.CharField(
        label="Notification subject", max_length=200, widget=forms.TextInput(attrs={"size": 60})
    )
    notification_body = forms.CharField(
        label="Notification text",
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60}),
        help_text="The customer receives this by email when the charge is approved. Start "
        "without a greeting: the email greets the customer by name.",
    )
    charge_date = forms.DateTimeField(
        label="Charge date",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Leave empty to charge as soon as the amount is approved. "
        f"Times are in {settings.TIME_ZONE}.",
    )

    def clean(self):
        cleaned = super().clean()
        amount, currency = cleaned.get("amount"), cleaned.get("currency")
        if amount and currency:
            try:
                money.to_minor(amount, currency)
            except money.MoneyError as exc:
                self.add_error("amount", exc.message)
        return cleaned

    @classmethod
    def initial_for(cls, issue: ChargeIssue) -> dict:
        """What the issue already holds, e.g. the amount and wording copied by 1r. restart."""
        return {
            "amount": (
                money.from_minor(issue.amount_minor, issue.currency)
                if issue.amount_minor is not None
                else None
            ),
            "currency": issue.currency,
            "notification_subject": issue.notification_subject,
            "notification_body": issue.notification_body,
            "charge_date": issue.charge_date,
        }


class ChargeApprovalForm(ThemedForm):
    APPROVE = "approve"
    RETURN = "return"

    # Set by the submit button pressed; the template renders the two buttons, not this field.
    decision = forms.ChoiceField(
        choices=[(APPROVE, "Approve"), (RETURN, "Return to the clerk")],
        error_messages={"required": "Choose whether to approve or return the charge."},
    )
    comment = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required when you return the charge: say what needs changing. When you "
        "approve, it is kept in the charge's history.",
    )


class ChargeCancelForm(ThemedForm):
    comment = forms.CharField(
        label="Reason",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )


class RefundRequestForm(forms.Form):
    """A refund of a succeeded charge: how much (in the charge's currency) and why."""

    # Text, checked by money.to_minor in the service (see ChargeAmountEntryForm.amount).
    amount = forms.CharField(
        max_length=40,
        strip=False,
        help_text="In the charge's currency, e.g. 10.00 for part of a 49.90 EUR charge.",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why the customer gets this money back (kept in the refund's history).",
    )


class RefundApprovalForm(forms.Form):
    APPROVE = "approve"
    REJECT = "reject"

    # Set by the submit button pressed; the template renders the two buttons, not this field.
    decision = forms.ChoiceField(
        choices=[(APPROVE, "Approve"), (REJECT, "Reject")],
        error_messages={"required": "Choose whether to approve or reject the refund."},
    )
    comment = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required when you reject the refund: say why.",
    )
