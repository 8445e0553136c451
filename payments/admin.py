"""Staff see the money path's rows read-only, scoped to their spaces; the only actions are
"process again" (provider events) and "redeliver" (outbound events), each one service call."""

from django.contrib import admin, messages
from django.db import transaction
from unfold.admin import ModelAdmin, TabularInline
from unfold.decorators import display

from core.admin import ObjectIdAdminMixin, WorkQueueFilter, badge_colours
from core.money import format_money
from spaces.admin import ReadOnlyScopedAdmin

from . import outbox, selectors, webhooks
from .models import ChargeAttempt, DeliveryAttempt, OutboundEvent, ProviderEvent


@admin.register(ChargeAttempt)
class ChargeAttemptAdmin(ReadOnlyScopedAdmin):
    """The provider charges, as recorded by payments.attempts. Read-only."""

    space_field = "space"
    list_display = (
        "idempotency_key",
        "purpose",
        "status_badge",
        "amount",
        "provider_payment_intent_id",
        "failure_code",
        "decline_code",
        "hard_decline",
        "created_at",
    )
    list_filter = ("status", "purpose", "hard_decline", "created_at")
    search_fields = ("provider_payment_intent_id", "idempotency_key", "provider_customer_id")
    readonly_fields = (
        "purpose",
        "charge_issue",
        "refund",
        "space",
        "idempotency_key",
        "amount_minor",
        "currency",
        "provider_customer_id",
        "provider_payment_method_id",
        "status",
        "provider_payment_intent_id",
        "provider_charge_id",
        "provider_refund_id",
        "failure_code",
        "decline_code",
        "failure_message",
        "hard_decline",
        "last_error",
        "created_at",
        "finished_at",
    )
    fields = readonly_fields

    def get_search_results(self, request, queryset, search_term):
        # Indexed lookups, not Django's LIKE '%…%' on every search field (core.search).
        return selectors.charge_attempt_search(queryset=queryset, text=search_term), False

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, attempt):
        return format_money(attempt.amount_minor, attempt.currency)

    @display(
        description="status",
        ordering="status",
        label=badge_colours(
            ChargeAttempt.Status,
            {
                ChargeAttempt.Status.PENDING: "info",
                ChargeAttempt.Status.PROCESSING: "info",
                ChargeAttempt.Status.SUCCEEDED: "success",
                ChargeAttempt.Status.FAILED: "danger",
                ChargeAttempt.Status.UNKNOWN: "warning",
            },
        ),
    )
    def status_badge(self, attempt):
        return attempt.status, attempt.get_status_display()


class _GlobalReadOnly(ObjectIdAdminMixin, ModelAdmin):
    """Provider events belong to the platform account, not to one space: superusers and
    staff with the model's view permission see them."""

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ProviderEventQueueFilter(WorkQueueFilter):
    queues = {"failed": ("Failed", lambda request: selectors.provider_events_failed_q())}


class OutboundEventQueueFilter(WorkQueueFilter):
    queues = {"failed": ("Failed", lambda request: selectors.outbound_events_failed_q())}


@admin.register(ProviderEvent)
class ProviderEventAdmin(_GlobalReadOnly):
    list_display = ("provider_event_id", "type", "received_at", "processed_at", "tries", "given_up")
    list_filter = (
        ProviderEventQueueFilter,
        "type",
        "given_up",
        ("processed_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("provider_event_id", "type")
    readonly_fields = (
        "provider_event_id",
        "type",
        "payload",
        "received_at",
        "processed_at",
        "tries",
        "next_try_at",
        "last_error",
        "given_up",
    )
    fields = readonly_fields
    actions = ["process_again"]

    @admin.action(description="Process again", permissions=["process"])
    def process_again(self, request, queryset):
        count = 0
        for event in queryset.filter(processed_at__isnull=True):
            with transaction.atomic():
                webhooks.provider_event_process_again(event=event)
            count += 1
        messages.success(request, f"{count} event(s) sent for processing again.")

    def has_process_permission(self, request):
        return request.user.has_perm("payments.change_providerevent")


class DeliveryAttemptInline(TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("attempted_at", "status_code", "latency_ms", "succeeded", "error")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(OutboundEvent)
class OutboundEventAdmin(ReadOnlyScopedAdmin):
    space_field = "space"
    list_display = ("type", "space", "url", "created_at", "delivered_at", "tries", "given_up")
    list_filter = (
        OutboundEventQueueFilter,
        "type",
        "given_up",
        ("delivered_at", admin.EmptyFieldListFilter),
    )
    list_select_related = ("space",)
    readonly_fields = (
        "id",
        "space",
        "type",
        "url",
        "payload",
        "created_at",
        "delivered_at",
        "tries",
        "next_try_at",
        "given_up",
    )
    fields = readonly_fields
    inlines = [DeliveryAttemptInline]
    actions = ["redeliver"]

    @admin.action(description="Redeliver", permissions=["redeliver"])
    def redeliver(self, request, queryset):
        count = 0
        for event in queryset:
            with transaction.atomic():
                outbox.outbound_event_redeliver(event=event)
            count += 1
        messages.success(request, f"{count} event(s) queued for delivery.")

    def has_redeliver_permission(self, request):
        return request.user.has_perm("payments.change_outboundevent")
