import re

from crispy_forms.helper import FormHelper
from crispy_forms.layout import HTML, Field, Layout, Submit
from django import forms
from django.utils.translation import gettext_lazy as _

SETUP_INTENT_ID = re.compile(r"^seti_[A-Za-z0-9_]{1,250}$")

CARD_FIELD = HTML(
    '{% load i18n %}<div class="mb-3"><label class="form-label" for="card-element">'
    '{% translate "Card" %}</label><div id="card-element" class="card-element"></div>'
    '<div id="card-errors" class="card-errors" role="alert" aria-live="polite"></div></div>'
)


class _RegistrationForm(forms.Form):
    # Filled by the page's script with the id of the SetupIntent the browser confirmed. Its
    # errors are form-level: a hidden field's own errors would not be shown to the customer.
    setup_intent = forms.CharField(widget=forms.HiddenInput, required=False, max_length=255)

    def clean(self):
        cleaned = super().clean()
        value = cleaned.get("setup_intent") or ""
        if not value:
            self.add_error(
                None,
                _(
                    "Your card was not confirmed. Enter it in the card field and press "
                    "“Save card” (the page needs JavaScript)."
                ),
            )
        elif not SETUP_INTENT_ID.match(value):
            self.add_error(None, _("Not a card setup reference. Please enter your card again."))
        return cleaned


class CardRegistrationForm(_RegistrationForm):
    """The public page: who the customer is. The card itself lives only in the provider's field."""

    name = forms.CharField(max_length=200, label=_("Name on the account"))
    email = forms.EmailField(label=_("Email"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_tag = False  # the page writes the <form> and its CSRF token
        self.helper.disable_csrf = True
        self.helper.layout = Layout(
            Field("name", autocomplete="name"),
            Field("email", autocomplete="email"),
            CARD_FIELD,
            "setup_intent",
            Submit("save", _("Save card"), css_id="save-card"),
        )


class InvitationRegistrationForm(_RegistrationForm):
    """An invitation's page: the customer is known, only the card is asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_tag = False
        self.helper.disable_csrf = True
        self.helper.layout = Layout(
            CARD_FIELD, "setup_intent", Submit("save", _("Save card"), css_id="save-card")
        )
