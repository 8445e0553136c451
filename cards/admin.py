from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from unfold.admin import TabularInline
from unfold.decorators import display

from core.admin import badge_colours
from core.errors import DomainError, message_refusal
from spaces.admin import (
    ReadOnlyScopedAdmin,
    SpaceScopedFieldListFilter,
    SpaceScopedHistoryAdmin,
)

from . import selectors, services
from .models import CardEvent, CardInvitation, Customer, PaymentCard, SepaDebitMethod


class PaymentCardInline(TabularInline):
    model = PaymentCard
    extra = 0
    can_delete = False
    fields = ("brand", "last4", "expiry", "status", "is_default", "lookup_key", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class SepaDebitMethodInline(TabularInline):
    model = SepaDebitMethod
    extra = 0
    can_delete = False
    fields = ("country", "bank_code", "last4", "status", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Customer)
class CustomerAdmin(SpaceScopedHistoryAdmin):
    list_display = (
        "name",
        "email",
        "external_number",
        "space",
        "card_count",
        "provider_customer_id",
        "created_at",
    )
    list_filter = (("space", SpaceScopedFieldListFilter), "preferred_language", "created_at")
    search_fields = ("name", "email", "external_number", "cards__last4")
    list_select_related = ("space",)
    readonly_fields = ("provider_customer_id", "created_at", "updated_at")
    fields = (
        "space",
        "name",
        "email",
        "preferred_language",
        "external_number",
        "tags",
        "provider_customer_id",
        "created_at",
        "updated_at",
    )
    inlines = [PaymentCardInline, SepaDebitMethodInline]
    actions = ["send_registration_link", "start_charge"]

    def get_queryset(self, request):
        # A subquery per listed customer, not a GROUP BY over every customer of the space.
        cards = (
            PaymentCard.objects.filter(customer=OuterRef("pk"))
            .order_by()
            .values("customer")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(card_count=Coalesce(Subquery(cards), 0, output_field=IntegerField()))
        )

    def get_search_results(self, request, queryset, search_term):
        # Indexed lookups, not Django's LIKE '%…%' on every search field (core.search).
        return selectors.customer_search(queryset=queryset, text=search_term), False

    def save_model(self, request, obj, form, change):
        # An edit goes through the service: a new external number moves the cards' lookup keys
        # (and the recurring lines keyed by them) in the same transaction, audited.
        if change:
            services.customer_update(customer=obj, acting_user=request.user)
        else:
            super().save_model(request, obj, form, change)

    def get_readonly_fields(self, request, obj=None):
        # The space is chosen once, at creation: its cards and charges stay in it.
        fields = super().get_readonly_fields(request, obj)
        return fields if obj is None else ("space", *fields)

    @admin.display(description="cards", ordering="card_count")
    def card_count(self, obj):
        return obj.card_count

    @admin.action(description="Send registration link", permissions=["send_link"])
    def send_registration_link(self, request, queryset):
        sent = 0
        for customer in queryset:
            services.card_invitation_send(customer=customer, acting_user=request.user)
            sent += 1
        self.message_user(
            request, f"Registration link sent to {sent} customer(s).", messages.SUCCESS
        )

    @admin.action(
        description="Start a charge (1. charge amount entry)", permissions=["start_charge"]
    )
    def start_charge(self, request, queryset):
        # Billing builds on cards, not the other way round: imported where it is used (its
        # refusals are DomainErrors, so catching them needs no billing import).
        from billing.services import charge_issue_start_by_staff

        started, refused = 0, []
        for customer in queryset:
            try:
                charge_issue_start_by_staff(customer=customer, acting_user=request.user)
                started += 1
            except DomainError as error:
                refused.append((customer.name, error))
        if started:
            self.message_user(
                request,
                f"Started {started} charge(s); they wait for 1. charge amount entry.",
                messages.SUCCESS,
            )
        for name, error in refused:
            message_refusal(request, error, subject=name)

    def has_start_charge_permission(self, request):
        return request.user.has_perm("billing.add_chargeissue")

    def has_send_link_permission(self, request):
        return request.user.has_perm("cards.add_cardinvitation")


@admin.register(PaymentCard)
class PaymentCardAdmin(ReadOnlyScopedAdmin):
    list_display = (
        "customer",
        "brand",
        "last4",
        "expiry",
        "status_badge",
        "is_default",
        "lookup_key",
        "created_at",
    )
    list_filter = ("status", "brand", "is_default", ("space", SpaceScopedFieldListFilter))
    search_fields = (
        "last4",
        "customer__name",
        "customer__email",
        "customer__external_number",
    )
    list_select_related = ("customer",)

    @display(
        description="status",
        ordering="status",
        label=badge_colours(
            PaymentCard.Status,
            {PaymentCard.Status.ACTIVE: "success", PaymentCard.Status.EXPIRED: "warning"},
        ),
    )
    def status_badge(self, card):
        return card.status, card.get_status_display()

    readonly_fields = (
        "space",
        "customer",
        "provider_payment_method_id",
        "brand",
        "last4",
        "exp_month",
        "exp_year",
        "fingerprint",
        "status",
        "is_default",
        "lookup_key",
        "created_at",
    )

    def get_search_results(self, request, queryset, search_term):
        # Indexed lookups, not Django's LIKE '%…%' on every search field (core.search).
        return selectors.payment_card_search(queryset=queryset, text=search_term), False


@admin.register(CardInvitation)
class CardInvitationAdmin(ReadOnlyScopedAdmin):
    list_display = ("customer", "created_by", "created_at", "expires_at", "used_at")
    list_filter = (("space", SpaceScopedFieldListFilter), "created_at")
    search_fields = ("customer__name", "customer__email")
    list_select_related = ("customer", "created_by")


@admin.register(CardEvent)
class CardEventAdmin(ReadOnlyScopedAdmin):
    list_display = ("created_at", "kind", "customer", "card", "acting_user", "dispatched_at")
    list_filter = ("kind", ("space", SpaceScopedFieldListFilter), "created_at")
    search_fields = ("customer__name", "customer__email", "card__last4")
    list_select_related = ("customer", "card", "acting_user")
