from django import forms

from .models import ChargeFlow, ChargeFlowLevelConfiguration
from .services import stale_edit_error


class VersionedForm(forms.ModelForm):
    """Optimistic locking in the admin: the version this copy was read at travels in a hidden
    field; saving a stale copy is refused with who changed it and when (the service checks the
    same again in its UPDATE … WHERE version, for the race between this check and the save)."""

    version_read = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["version_read"].initial = self.instance.version

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk:
            read = cleaned.get("version_read")
            current = type(self.instance).objects.filter(pk=self.instance.pk).first()
            if current is not None and read != current.version:
                raise forms.ValidationError(stale_edit_error(current).message, code="stale")
        return cleaned


class ChargeFlowForm(VersionedForm):
    class Meta:
        model = ChargeFlow
        fields = ("space", "name", "priority", "planned_purge_date")


class LevelConfigurationForm(VersionedForm):
    period = forms.DurationField(help_text="ISO 8601 duration, e.g. P3D (3 days) or PT12H.")

    class Meta:
        model = ChargeFlowLevelConfiguration
        fields = (
            "flow",
            "name",
            "priority",
            "period",
            "run_token_charge",
            "run_saved_method",
            "run_payment_link",
            "notify_customer",
            "link_delivery",
            "email_texts",
            "state",
        )


class RecipientForm(forms.Form):
    email = forms.EmailField(label="New recipient email", max_length=254)
