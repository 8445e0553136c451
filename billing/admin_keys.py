"""API keys in the admin: add one (the full key is shown once), list them by prefix, revoke.

billing/admin.py imports this module; importing it registers the admin on the default site.
"""

from django.contrib import admin, messages
from unfold.admin import TabularInline

from core.errors import message_refusal
from spaces.admin import SpaceScopedFieldListFilter, SpaceScopedHistoryAdmin

from . import api_services
from .exceptions import BillingError
from .models import ApiKey, ApiKeyEvent


class ApiKeyEventInline(TabularInline):
    """Who created and revoked the key. Only services write it."""

    model = ApiKeyEvent
    verbose_name_plural = "history"
    extra = 0
    can_delete = False
    fields = ("created_at", "action", "actor")
    readonly_fields = fields

    # Whoever may see the key may see its history; roles carry no separate event permission.
    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("billing.view_apikey")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(SpaceScopedHistoryAdmin):
    list_display = ("name", "space", "prefix", "created_by", "created_at", "revoked_at")
    list_filter = (
        ("space", SpaceScopedFieldListFilter),
        ("revoked_at", admin.EmptyFieldListFilter),
    )
    list_select_related = ("space", "created_by")
    search_fields = ("name", "prefix")
    fields = ("space", "name", "prefix", "created_by", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_by", "created_at", "revoked_at")
    actions = ["revoke_keys"]
    inlines = [ApiKeyEventInline]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def get_fields(self, request, obj=None):
        return ("space", "name") if obj is None else self.fields

    # A key is made by api_key_create and only revoked afterwards: its page is read-only (so
    # prefix and hash can never be edited) and it is never deleted (requests made with it, and
    # their idempotency records, stay explained).
    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        return request.user.has_perm("billing.change_apikey")

    def save_model(self, request, obj, form, change):
        api_key, full_key = api_services.api_key_create(
            space=obj.space, name=obj.name, acting_user=request.user
        )
        # The admin goes on with `obj` (history entry, redirect): make it the saved key.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(api_key, field.attname))
        obj._state.adding = False
        obj._state.db = api_key._state.db
        obj.full_key = full_key

    def response_add(self, request, obj, post_url_continue=None):
        messages.success(
            request,
            f"The new API key for {obj.space} is {obj.full_key} — Copy it now, it is not shown "
            f"again (afterwards only its prefix {obj.prefix} is).",
        )
        return super().response_add(request, obj, post_url_continue)

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_keys(self, request, queryset):
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            try:
                api_services.api_key_revoke(api_key=api_key, acting_user=request.user)
            except BillingError as exc:
                message_refusal(request, exc, subject=api_key)
                continue
            self.log_change(request, api_key, "Revoked.")
            revoked += 1
        self.message_user(
            request,
            f"{revoked} key(s) revoked; requests made with them are now refused.",
            messages.SUCCESS,
        )
