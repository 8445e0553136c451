from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from unfold.decorators import display

from cards.admin import CustomerAdmin
from cards.models import Customer, PaymentCard
from core import money
from core.admin import badge_colours
from spaces.admin import (
    ReadOnlyScopedAdmin,
    SpaceScopedFieldListFilter,
    SpaceScopedHistoryAdmin,
)

from . import selectors, services
from .exceptions import RecurringError
from .models import (
    ExpiringCard,
    LineMissingCard,
    RecurringEvent,
    RecurringLine,
    RecurringSettings,
)

Status = RecurringLine.Status


class CardOnFileFilter(admin.SimpleListFilter):
    title = "card"
    parameter_name = "card"

    def lookups(self, request, model_admin):
        return [("empty", "Empty (waiting for a card)"), ("set", "Set")]

    def queryset(self, request, queryset):
        if self.value() == "empty":
            return queryset.filter(card__isnull=True)
        if self.value() == "set":
            return queryset.filter(card__isnull=False)
        return queryset


class DueSoonFilter(admin.SimpleListFilter):
    title = "due"
    parameter_name = "due"

    def lookups(self, request, model_admin):
        return [("soon", f"Within {selectors.DUE_SOON_DAYS} days")]

    def queryset(self, request, queryset):
        if self.value() == "soon":
            return selectors.recurring_lines_due_within(queryset)
        return queryset


class RecurringLineForm(forms.ModelForm):
    """Amount in the currency's units ("49.90"), checked by the service's own rules."""

    amount = forms.CharField(max_length=30, help_text="E.g. 49.90")

    class Meta:
        model = RecurringLine
        fields = (
            "customer",
            "description",
            "amount",
            "currency",
            "interval",
            "cron",
            "charge_date",
            "card",
            "card_lookup_key",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["amount"] = money.format_money(
                self.instance.amount_minor, self.instance.currency
            ).split(" ")[0]
            self.fields["customer"].disabled = True
        self.fields["card"].required = False
        self.fields["card"].help_text = "Its lookup key is saved on the line."
        self.fields["card"].queryset = self.fields["card"].queryset.filter(
            status=PaymentCard.Status.ACTIVE
        )

    def clean(self):
        cleaned = super().clean()
        customer = cleaned.get("customer") or getattr(self.instance, "customer", None)
        if customer is None or self.errors:
            return cleaned
        try:
            cleaned["amount_minor"] = money.to_minor(cleaned["amount"], cleaned["currency"])
        except (money.MoneyError, KeyError) as exc:
            self.add_error("amount", str(exc))
            return cleaned
        charge_date = cleaned["charge_date"]
        if self.instance.pk and "charge_date" not in self.changed_data:
            charge_date = timezone.localdate()  # an unchanged date is not checked again
        try:
            services.recurring_line_check(
                customer=customer,
                amount_minor=cleaned["amount_minor"],
                currency=cleaned["currency"],
                charge_date=charge_date,
                interval=cleaned["interval"],
                cron=cleaned.get("cron", ""),
                card=cleaned.get("card"),
                card_lookup_key=cleaned.get("card_lookup_key", ""),
            )
        except RecurringError as exc:
            field = exc.field if exc.field in self.fields else None
            raise ValidationError({field: exc.message} if field else exc.message) from None
        return cleaned


@admin.register(RecurringLine)
class RecurringLineAdmin(SpaceScopedHistoryAdmin):
    form = RecurringLineForm
    list_display = (
        "customer",
        "description",
        "amount_display",
        "interval",
        "charge_date",
        "status_badge",
        "card",
        "card_lookup_key",
        "generation",
    )
    list_filter = (
        "status",
        CardOnFileFilter,
        DueSoonFilter,
        "interval",
        ("space", SpaceScopedFieldListFilter),
    )
    search_fields = ("card_lookup_key", "customer__name", "customer__external_number")
    readonly_fields = (
        "space",
        "status",
        "series",
        "generation",
        "generated_from",
        "charge_issue",
        "card_reminder_sent_at",
        "created_by",
        "created_at",
        "updated_at",
    )
    actions = ["pause_lines", "resume_lines", "cancel_lines"]

    def get_queryset(self, request):
        return selectors.recurring_line_list(queryset=super().get_queryset(request))

    @admin.display(description="amount")
    def amount_display(self, obj):
        return money.format_money(obj.amount_minor, obj.currency)

    @display(
        description="status",
        ordering="status",
        label=badge_colours(Status, {Status.ACTIVE: "success", Status.PAUSED: "warning"}),
    )
    def status_badge(self, obj):
        return obj.status, obj.get_status_display()

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.status not in (Status.ACTIVE, Status.PAUSED):
            return False  # generated and cancelled lines are history
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False  # cancel instead: the audit trail stays

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if not change:
                line = services.recurring_line_create(
                    customer=data["customer"],
                    amount_minor=data["amount_minor"],
                    currency=data["currency"],
                    charge_date=data["charge_date"],
                    interval=data["interval"],
                    cron=data.get("cron", ""),
                    card=data.get("card"),
                    card_lookup_key=data.get("card_lookup_key", ""),
                    description=data.get("description", ""),
                    acting_user=request.user,
                )
                obj.pk = line.pk
                return
            changes = {
                "amount_minor": data["amount_minor"],
                **{f: data[f] for f in form.changed_data if f in services.EDITABLE},
            }
            if "card" in form.changed_data or "card_lookup_key" in form.changed_data:
                changes["card"] = data.get("card")
                changes["card_lookup_key"] = data.get("card_lookup_key", "")
            services.recurring_line_edit(line=obj, acting_user=request.user, **changes)
        except RecurringError as exc:
            # Only a race with another change gets here (the form ran the same checks).
            self.message_user(request, exc.message, messages.ERROR)

    def _bulk(self, request, queryset, service, done):
        changed, refused = 0, []
        for line in queryset:
            try:
                service(line=line, acting_user=request.user)
                changed += 1
            except RecurringError as exc:
                refused.append(f"{line}: {exc.message}")
        if changed:
            self.message_user(request, f"{done} {changed} line(s).", messages.SUCCESS)
        for text in refused:
            self.message_user(request, text, messages.ERROR)

    @admin.action(description="Pause", permissions=["change"])
    def pause_lines(self, request, queryset):
        self._bulk(request, queryset, services.recurring_line_pause, "Paused")

    @admin.action(description="Resume", permissions=["change"])
    def resume_lines(self, request, queryset):
        self._bulk(request, queryset, services.recurring_line_resume, "Resumed")

    @admin.action(description="Cancel", permissions=["change"])
    def cancel_lines(self, request, queryset):
        self._bulk(request, queryset, services.recurring_line_cancel, "Cancelled")


@admin.register(LineMissingCard)
class LineMissingCardAdmin(ReadOnlyScopedAdmin):
    """The staff list of lines still without a card (seed 003's gap), soonest first."""

    list_display = (
        "charge_date",
        "customer",
        "card_lookup_key",
        "amount_display",
        "card_reminder_sent_at",
    )
    list_filter = (DueSoonFilter, ("space", SpaceScopedFieldListFilter))
    search_fields = ("card_lookup_key", "customer__name", "customer__external_number")

    def get_queryset(self, request):
        return selectors.recurring_lines_missing_card(queryset=super().get_queryset(request))

    @admin.display(description="amount")
    def amount_display(self, obj):
        return money.format_money(obj.amount_minor, obj.currency)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("recurring.view_recurringline")


@admin.register(ExpiringCard)
class ExpiringCardAdmin(ReadOnlyScopedAdmin):
    """Cards whose expiry month ends within their space's warning window (not replaced by a
    later card), soonest first, with the recurring lines and running collections that would
    fail with them, and when the customer was emailed."""

    list_display = (
        "expiry",
        "card_display",
        "customer",
        "expiry_warning_sent_at",
        "lines_display",
        "collections_display",
    )
    list_filter = (("space", SpaceScopedFieldListFilter),)
    search_fields = ("customer__name", "customer__email", "customer__external_number", "last4")

    def get_queryset(self, request):
        return selectors.expiring_card_list(queryset=super().get_queryset(request))

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("cards.view_paymentcard")

    @admin.display(description="card")
    def card_display(self, obj):
        return f"{obj.brand} •••• {obj.last4}"

    @admin.display(description="recurring lines")
    def lines_display(self, obj):
        if not obj.open_lines:
            return "–"
        return format_html_join(
            ", ",
            '<a href="{}">#{} {} on {}</a>',
            (
                (
                    reverse("admin:recurring_recurringline_change", args=[line.pk]),
                    line.pk,
                    money.format_money(line.amount_minor, line.currency),
                    line.charge_date.isoformat(),
                )
                for line in obj.open_lines
            ),
        )

    @admin.display(description="collections")
    def collections_display(self, obj):
        if not obj.collected_issues:
            return "–"
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            (
                (
                    reverse("admin:chargeflows_chargeflowcase_change", args=[issue.flow_case.pk]),
                    str(issue.flow_case),
                )
                for issue in obj.collected_issues
            ),
        )


@admin.register(RecurringSettings)
class RecurringSettingsAdmin(SpaceScopedHistoryAdmin):
    list_display = (
        "space",
        "auto_approve_up_to_minor",
        "auto_approve_currency",
        "card_reminder_days",
        "updated_by",
        "updated_at",
    )
    fields = ("space", "auto_approve_up_to_minor", "auto_approve_currency", "card_reminder_days")

    def get_readonly_fields(self, request, obj=None):
        return ("space",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        saved = services.recurring_settings_update(
            space=obj.space,
            acting_user=request.user,
            auto_approve_up_to_minor=data["auto_approve_up_to_minor"],
            auto_approve_currency=data["auto_approve_currency"],
            card_reminder_days=data["card_reminder_days"],
        )
        obj.pk = saved.pk


@admin.register(RecurringEvent)
class RecurringEventAdmin(ReadOnlyScopedAdmin):
    list_display = ("created_at", "action", "line", "from_status", "to_status", "actor")
    list_filter = ("action", ("space", SpaceScopedFieldListFilter), "created_at")
    list_select_related = ("line", "actor")


# cards' customer page, with the customer's open lines added here (cards does not know about
# recurring). A read-only list, not an inline: an inline formset would make every POST of the
# customer form carry its management form.
admin.site.unregister(Customer)


@admin.register(Customer)
class CustomerWithLinesAdmin(CustomerAdmin):
    fields = (*CustomerAdmin.fields, "recurring_lines")
    readonly_fields = (*CustomerAdmin.readonly_fields, "recurring_lines")

    @admin.display(description="recurring lines")
    def recurring_lines(self, obj):
        if obj is None or obj.pk is None:
            return "–"
        lines = selectors.recurring_line_list(
            queryset=obj.recurring_lines.filter(status__in=(Status.ACTIVE, Status.PAUSED))
        ).order_by("charge_date", "pk")
        if not lines:
            return "None"
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td></tr>",
            (
                (
                    reverse("admin:recurring_recurringline_change", args=[line.pk]),
                    line.description or f"Line {line.pk}",
                    money.format_money(line.amount_minor, line.currency),
                    line.charge_date,
                    line.get_status_display(),
                    line.card or "empty",
                    line.card_lookup_key,
                )
                for line in lines
            ),
        )
        return format_html(
            "<table><tr><th>line</th><th>amount</th><th>next charge</th><th>status</th>"
            "<th>card</th><th>lookup key</th></tr>{}</table>",
            rows,
        )
