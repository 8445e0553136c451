from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.http import Http404
from django.urls import reverse
from django.utils.html import format_html
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from simple_history.admin import SimpleHistoryAdmin
from unfold.admin import ModelAdmin, TabularInline
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm

from core.admin import ObjectIdAdminMixin
from core.errors import message_refusal

from . import services, twofactor
from .models import Space, SpaceChargeLimit, SpaceEvent, SpaceMembership
from .selectors import space_list_for_user


class SpaceScopedFieldListFilter(admin.RelatedFieldListFilter):
    """A changelist filter on a relation ("space", "customer", ...) that offers only rows of
    the user's own spaces: the plain filter lists every space's (or customer's) name.

    Use it as `list_filter = (("space", SpaceScopedFieldListFilter), ...)`. The related model
    is a Space or has a `space` field.
    """

    def field_choices(self, field, request, model_admin):
        spaces = space_list_for_user(user=request.user).values("pk")
        related = field.related_model
        if related is Space:
            scope = {"pk__in": spaces}
        elif any(f.name == "space" for f in related._meta.get_fields()):
            scope = {"space__in": spaces}
        else:
            raise ImproperlyConfigured(f"{related.__name__} belongs to no space.")
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(include_blank=False, ordering=ordering, limit_choices_to=scope)


class SpaceScopedAdminMixin(ObjectIdAdminMixin):
    """Staff see and pick only rows of their own spaces (and a malformed object id in a URL
    is a 404, see core.admin).

    `space_field` is the lookup from the model to its Space ("space", "issue__space", ...);
    None means the model is the Space itself.
    """

    space_field: str | None = "space"
    # The list counts only the rows it shows ("3 of …" needs a second COUNT over every row
    # of the table, 2 × 0.1 s and more at a million charges).
    show_full_result_count = False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        spaces = space_list_for_user(user=request.user)
        if self.space_field is None:
            return queryset.filter(pk__in=spaces.values("pk"))
        return queryset.filter(**{f"{self.space_field}__in": spaces.values("pk")})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not request.user.is_superuser:
            related = db_field.related_model
            if related is Space:
                kwargs["queryset"] = space_list_for_user(user=request.user)
            elif any(f.name == "space" for f in related._meta.get_fields()):
                # Any other space's row (a customer, a card) is never offered either.
                kwargs["queryset"] = related._default_manager.filter(
                    space__in=space_list_for_user(user=request.user).values("pk")
                )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class SpaceScopedHistoryAdmin(SpaceScopedAdminMixin, SimpleHistoryAdmin, ModelAdmin):
    """A scoped admin whose History page lists each change with who made it and every
    field's old and new value (django-simple-history, see core/history.py).

    simple_history's own history view falls back to the historical rows when the object is
    not in the admin's queryset, which would show another space's history: here the object
    must be one of the user's spaces' (a removed object's history stays in the database,
    for superusers' eyes in the shell). Reverting is off (SIMPLE_HISTORY_REVERT_DISABLED):
    a revert would bypass the services and their audit rows."""

    def _scoped_or_404(self, request, object_id):
        if self.get_object(request, unquote(object_id)) is None:
            raise Http404("No such object.")

    def history_view(self, request, object_id, extra_context=None):
        self._scoped_or_404(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        self._scoped_or_404(request, object_id)
        return super().history_form_view(request, object_id, version_id, extra_context)


class ReadOnlyScopedAdmin(SpaceScopedAdminMixin, ModelAdmin):
    """Rows only services write (audit trails, provider data): staff look, never edit here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class SpaceChargeLimitInline(TabularInline):
    model = SpaceChargeLimit
    extra = 0
    fields = ("currency", "max_charge_minor")


class SpaceEventInline(TabularInline):
    """Changes to settings no one can read back (the webhook secret). Only services write it."""

    model = SpaceEvent
    verbose_name_plural = "history of the webhook secret and the refund threshold"
    extra = 0
    can_delete = False
    fields = ("created_at", "action", "actor", "detail")
    readonly_fields = fields

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("spaces.view_space")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Space)
class SpaceAdmin(SpaceScopedHistoryAdmin):
    space_field = None
    list_display = ("name", "slug", "default_currency", "created_at")
    search_fields = ("name", "slug")
    readonly_fields = ("created_at",)
    prepopulated_fields = {"slug": ("name",)}
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    inlines = [SpaceChargeLimitInline, SpaceEventInline]
    actions = ["rotate_webhook_secret"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if "refund_threshold_minor" in form.changed_data:
            # The admin's change form is one transaction: the audit row commits with the value.
            services.space_refund_threshold_changed(
                space=obj,
                acting_user=request.user,
                before=form.initial.get("refund_threshold_minor") if change else None,
            )
        url_is_new = "webhook_url" in form.changed_data and obj.webhook_url
        if change and url_is_new and not form.initial.get("webhook_url"):
            # A first webhook URL gets a fresh secret, shown now: the one made with the space
            # was never shown to anybody.
            _, secret = services.space_webhook_secret_rotate(space=obj, acting_user=request.user)
            self._show_secret(request, obj, secret)
        elif not change and obj.webhook_url:
            self._show_secret(request, obj, obj.webhook_secret)

    def _show_secret(self, request, space, secret):
        messages.success(
            request,
            f"The webhook signing secret of {space} is {secret} — Copy it now, it is not shown "
            "again (rotate it to get a new one).",
        )

    @admin.action(description="Rotate the webhook signing secret", permissions=["change"])
    def rotate_webhook_secret(self, request, queryset):
        for space in queryset:
            try:
                _, secret = services.space_webhook_secret_rotate(
                    space=space, acting_user=request.user
                )
            except services.SpaceError as exc:
                message_refusal(request, exc, subject=space)
                continue
            self._show_secret(request, space, secret)


@admin.register(SpaceMembership)
class SpaceMembershipAdmin(SpaceScopedAdminMixin, ModelAdmin):
    list_display = ("user", "space", "created_at")
    list_filter = (("space", SpaceScopedFieldListFilter),)
    list_select_related = ("user", "space")
    search_fields = ("user__username", "user__email", "space__name")


# --- Global schedules -------------------------------------------------------------------------


class SuperuserOnlyAdminMixin:
    """For rows that belong to no space and act on all of them (the beat schedules): a space's
    admin must not be able to stop the charging of every space, so only superusers see them."""

    def _superuser(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_module_permission(self, request):
        return self._superuser(request)

    def has_view_permission(self, request, obj=None):
        return self._superuser(request)

    def has_add_permission(self, request, *args):
        return self._superuser(request)

    def has_change_permission(self, request, obj=None):
        return self._superuser(request)

    def has_delete_permission(self, request, obj=None):
        return self._superuser(request)


# django_celery_beat comes before this app in INSTALLED_APPS, so its admins are registered by
# now: replace each with the same admin behind the superuser check.
# Each also takes unfold's ModelAdmin (after the package's own, whose views and forms it keeps),
# so its pages have the theme's widgets and layout like ours.
for _model in (PeriodicTask, IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule):
    _beat_admin = type(admin.site.get_model_admin(_model))
    admin.site.unregister(_model)
    admin.site.register(
        _model,
        type(
            f"SuperuserOnly{_beat_admin.__name__}",
            (SuperuserOnlyAdminMixin, _beat_admin, ModelAdmin),
            {},
        ),
    )


# --- Staff users and roles (django.contrib.auth's admins in the theme) -----------------------


class StaffUserChangeForm(UserChangeForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Django's change form declares the hash as a read-only field, part of the form
        # whether the page shows it or not: drop it, so its value is never rendered.
        del self.fields["password"]


class StaffUserAdmin(UserAdmin, ModelAdmin):
    """Django's user admin in the theme. The password hash is not shown, not even Django's
    summary of it (algorithm, and the first characters of salt and hash): the page says only
    whether a password is set, and links to the change-password form."""

    form = StaffUserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm
    # Django's first fieldset is username and password; the others are kept as they are.
    fieldsets = ((None, {"fields": ("username", "password_status")}), *UserAdmin.fieldsets[1:])
    readonly_fields = ("password_status",)

    @admin.display(description="password")
    def password_status(self, user):
        if user.pk is None:
            return "–"
        state = "A password is set." if user.has_usable_password() else "No password is set."
        url = reverse("admin:auth_user_password_change", args=[user.pk])
        return format_html('{} <a href="{}" class="underline">Change it</a>', state, url)


for _model, _model_admin in (
    (get_user_model(), StaffUserAdmin),
    (Group, type("ThemedGroupAdmin", (GroupAdmin, ModelAdmin), {})),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _model_admin)


# --- Staff accounts: second factors and login lockout (spaces/twofactor.py, django-axes) ------


@admin.action(description="Reset the second factor of the selected users", permissions=["reset"])
def reset_second_factor(modeladmin, request, queryset):
    users = {device.user for device in queryset.select_related("user")}
    for user in sorted(users, key=lambda u: u.get_username()):
        try:
            twofactor.second_factor_reset(user=user, acting_user=request.user)
        except twofactor.TwoFactorError as exc:
            message_refusal(request, exc)
        else:
            modeladmin.message_user(
                request,
                f"The second factor of {user.get_username()} was reset: they set up a new one "
                "at their next login.",
                messages.SUCCESS,
            )


class StaffSecondFactorAdmin(ModelAdmin):
    """Who has an authenticator, for superusers and for admins of the users' spaces; the one
    change offered is a reset (audited in the admin log). Replaces django-otp's own admin,
    which shows superusers each secret as a QR code and lets anyone with the permission edit
    devices."""

    # Whose device it is, and of the device only its name, whether it is confirmed and when
    # it was last used: never its key, counters or drift.
    list_display = ("user", "name", "confirmed", "last_used_at")
    list_filter = ("confirmed",)
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email")
    fields = ("user", "name", "confirmed", "last_used_at")
    actions = [reset_second_factor]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        spaces = space_list_for_user(user=request.user).values("pk")
        return queryset.filter(
            user__space_memberships__space__in=spaces, user__is_superuser=False
        ).distinct()

    def has_reset_permission(self, request):
        return request.user.has_perm(twofactor.RESET_PERMISSION)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # A reset removes the recovery codes too; a plain delete would leave them behind.
        return False


class SuperuserReadOnlyAdminMixin:
    """Login audit rows (django-axes): superusers look, nobody edits. They name users and
    addresses of every space, so space admins never see them."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LockoutAttemptAdmin(SuperuserReadOnlyAdminMixin, AccessAttemptAdmin, ModelAdmin):
    def has_delete_permission(self, request, obj=None):
        # Deleting a username's or address's attempts is how a superuser lifts a lockout early.
        return request.user.is_active and request.user.is_superuser


# django-otp and axes come before this app in INSTALLED_APPS, so their admins are registered
# by now. StaticDevice (recovery codes in clear) gets no admin page at all.
for _model, _model_admin in (
    (TOTPDevice, StaffSecondFactorAdmin),
    (StaticDevice, None),
    (AccessAttempt, LockoutAttemptAdmin),
    (
        AccessLog,
        type(
            "AccessLogReadOnlyAdmin", (SuperuserReadOnlyAdminMixin, AccessLogAdmin, ModelAdmin), {}
        ),
    ),
    (
        AccessFailureLog,
        type(
            "AccessFailureLogReadOnlyAdmin",
            (SuperuserReadOnlyAdminMixin, AccessFailureLogAdmin, ModelAdmin),
            {},
        ),
    ),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    if _model_admin is not None:
        admin.site.register(_model, _model_admin)
