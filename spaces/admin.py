from django.contrib import admin
from django.db import models

from .models import Space, SpaceMembership
from .selectors import space_list_for_user


class SpaceScopedAdminMixin:
    """Staff see and pick only rows of their own spaces.

    `space_field` is the lookup from the model to its Space ("space", "issue__space", ...);
    None means the model is the Space itself.
    """

    space_field: str | None = "space"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        spaces = space_list_for_user(user=request.user)
        if self.space_field is None:
            return queryset.filter(pk__in=spaces.values("pk"))
        return queryset.filter(**{f"{self.space_field}__in": spaces.values("pk")})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.related_model is Space and not request.user.is_superuser:
            kwargs["queryset"] = space_list_for_user(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyScopedAdmin(SpaceScopedAdminMixin, admin.ModelAdmin):
    """Rows only services write (audit trails, provider data): staff look, never edit here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Space)
class SpaceAdmin(SpaceScopedAdminMixin, admin.ModelAdmin):
    space_field = None
    list_display = ("name", "slug", "default_currency", "created_at")
    search_fields = ("name", "slug")
    readonly_fields = ("created_at",)
    prepopulated_fields = {"slug": ("name",)}
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(SpaceMembership)
class SpaceMembershipAdmin(SpaceScopedAdminMixin, admin.ModelAdmin):
    list_display = ("user", "space", "created_at")
    list_filter = ("space",)
    list_select_related = ("user", "space")
    search_fields = ("user__username", "user__email", "space__name")
