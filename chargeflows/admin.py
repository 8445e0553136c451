"""Charge flows in the admin: flows and their levels edited with optimistic locking (a stale
copy is refused naming who changed it and when), conditions on the flow's page, and the case
page with its timeline, a dry-run preview of the coming levels and the staff actions.

Every write goes through chargeflows.services (with its audit row); the admin only collects
input and reports.
"""

from functools import partial

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from spaces.admin import ReadOnlyScopedAdmin, SpaceScopedAdminMixin, SpaceScopedFieldListFilter
from spaces.selectors import space_list_for_user

from . import selectors, services
from .exceptions import ChargeFlowError
from .forms import ChargeFlowForm, LevelConfigurationForm, RecipientForm
from .models import (
    ChargeFlow,
    ChargeFlowCase,
    ChargeFlowCaseEvent,
    ChargeFlowCondition,
    ChargeFlowLevelConfiguration,
)

CASE_ACTIONS = ("next-level", "cancel", "recipient", "copy-link")


class VersionedAdminMixin:
    """Saves go through a service with the version the form was read at. The form refuses a
    stale copy first (VersionedForm.clean); a save racing in between is refused by the
    service's UPDATE … WHERE version and reported the same way here."""

    def _service_save(self, request, obj, form, change):
        """The admin's one service call for this save (each admin using the mixin defines it)."""
        raise NotImplementedError

    def save_model(self, request, obj, form, change):
        try:
            saved = self._service_save(request, obj, form, change)
        except ChargeFlowError as exc:
            request._chargeflows_refused = exc.message
            return
        obj.pk, obj.version = saved.pk, saved.version

    def save_related(self, request, form, formsets, change):
        if not getattr(request, "_chargeflows_refused", None):
            super().save_related(request, form, formsets, change)

    def response_add(self, request, obj, post_url_continue=None):
        return self._refused(request, obj) or super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        return self._refused(request, obj) or super().response_change(request, obj)

    def _refused(self, request, obj):
        message = getattr(request, "_chargeflows_refused", None)
        if not message:
            return None
        messages.error(request, message)
        if obj.pk:
            return HttpResponseRedirect(
                reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])
            )
        return HttpResponseRedirect(request.path)


class ChargeFlowConditionInline(admin.TabularInline):
    model = ChargeFlowCondition
    extra = 0
    fields = ("kind", "min_amount_minor", "max_amount_minor", "value")


class LevelSummaryInline(admin.TabularInline):
    """The flow's levels in order; each is edited on its own page (with its own version)."""

    model = ChargeFlowLevelConfiguration
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("priority", "name", "period", "run_token_charge", "run_saved_method",
              "run_payment_link", "state", "version")  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ChargeFlow)
class ChargeFlowAdmin(VersionedAdminMixin, SpaceScopedAdminMixin, admin.ModelAdmin):
    form = ChargeFlowForm
    list_display = ("name", "priority", "state", "space", "version", "updated_by", "updated_at")
    list_filter = ("state", ("space", SpaceScopedFieldListFilter))
    search_fields = ("name",)
    readonly_fields = ("state", "version", "updated_by", "updated_at")
    inlines = [ChargeFlowConditionInline, LevelSummaryInline]
    actions = ["activate", "deactivate", "delete_flow"]

    def get_readonly_fields(self, request, obj=None):
        # The space of an existing flow never changes.
        return (*self.readonly_fields, "space") if obj else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False  # deleting is a state (Deleting, then Deleted and purged): the action

    def _service_save(self, request, obj, form, change):
        data = form.cleaned_data
        if change and not form.has_changed():
            # Only the conditions were edited: save_formset sends them as their own versioned
            # edit, so the flow is not bumped (and audited) twice for one save.
            return obj
        if not change:
            return services.charge_flow_create(
                space=data["space"],
                name=data["name"],
                priority=data["priority"],
                planned_purge_date=data.get("planned_purge_date"),
                acting_user=request.user,
            )
        return services.charge_flow_update(
            flow=ChargeFlow.objects.get(pk=obj.pk),
            expected_version=data.get("version_read"),
            acting_user=request.user,
            **{field: data[field] for field in ("name", "priority", "planned_purge_date")},
        )

    def save_formset(self, request, form, formset, change):
        if formset.model is not ChargeFlowCondition:
            return super().save_formset(request, form, formset, change)
        # Conditions are part of the flow: they go through the flow's versioned service (audit
        # row, version bump) instead of the inline saving its rows directly.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        if not formset.has_changed():
            return
        flow = form.instance
        conditions = [
            {field: f.cleaned_data.get(field) for field in services.CONDITION_FIELDS}
            for f in formset.forms
            if f.cleaned_data and f not in formset.deleted_forms  # blank extra rows: {}
        ]
        for condition in conditions:
            condition["value"] = condition["value"] or ""
        try:
            saved = services.charge_flow_conditions_set(
                flow=flow,
                conditions=conditions,
                expected_version=flow.version,
                acting_user=request.user,
            )
        except ChargeFlowError as exc:
            # The flow's own fields may already be updated in this request's transaction.
            transaction.set_rollback(True)
            request._chargeflows_refused = exc.message
            return
        flow.version = saved.version

    def _transition(self, request, queryset, to_state):
        for flow in queryset:
            try:
                services.charge_flow_transition(
                    flow=flow, to_state=to_state, expected_version=flow.version,
                    acting_user=request.user,
                )  # fmt: skip
            except ChargeFlowError as exc:
                messages.error(request, f"{flow}: {exc.message}")
            else:
                messages.success(request, f"{flow} is now {flow.get_state_display()}.")

    @admin.action(description="Activate", permissions=["change"])
    def activate(self, request, queryset):
        self._transition(request, queryset, ChargeFlow.State.ACTIVE)

    @admin.action(description="Deactivate (keeps everything)", permissions=["change"])
    def deactivate(self, request, queryset):
        self._transition(request, queryset, ChargeFlow.State.INACTIVE)

    @admin.action(description="Delete (after its running cases)", permissions=["change"])
    def delete_flow(self, request, queryset):
        self._transition(request, queryset, ChargeFlow.State.DELETING)


@admin.register(ChargeFlowLevelConfiguration)
class LevelConfigurationAdmin(VersionedAdminMixin, SpaceScopedAdminMixin, admin.ModelAdmin):
    form = LevelConfigurationForm
    space_field = "flow__space"
    list_display = ("flow", "priority", "name", "period", "state", "version", "updated_by")
    list_filter = ("state",)
    search_fields = ("name", "flow__name")
    readonly_fields = ("version", "updated_by", "updated_at")

    def has_delete_permission(self, request, obj=None):
        return False  # levels that ran stay for the cases' history: set them inactive

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "flow" and not request.user.is_superuser:
            kwargs["queryset"] = ChargeFlow.objects.filter(
                space__in=space_list_for_user(user=request.user).values("pk")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def _service_save(self, request, obj, form, change):
        data = {k: v for k, v in form.cleaned_data.items() if k != "version_read"}
        if not change:
            return services.level_configuration_create(acting_user=request.user, **data)
        return services.level_configuration_update(
            configuration=ChargeFlowLevelConfiguration.objects.select_related("flow").get(
                pk=obj.pk
            ),
            expected_version=form.cleaned_data.get("version_read"),
            acting_user=request.user,
            **{k: v for k, v in data.items() if k != "flow"},
        )


class CaseEventInline(admin.TabularInline):
    model = ChargeFlowCaseEvent
    fk_name = "case"
    verbose_name_plural = "history"
    extra = 0
    can_delete = False
    fields = ("created_at", "action", "actor", "detail")
    readonly_fields = fields

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("chargeflows.view_chargeflowcase")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ChargeFlowCase)
class ChargeFlowCaseAdmin(ReadOnlyScopedAdmin):
    list_display = ("id", "issue", "flow", "state", "recipient_email", "created_at")
    list_filter = ("state", ("space", SpaceScopedFieldListFilter))
    search_fields = ("recipient_email", "issue__customer_name", "issue__external_reference")
    list_select_related = ("issue", "flow")
    fields = ("issue", "flow", "state", "recipient_email", "created_at", "finished_at")
    readonly_fields = fields
    inlines = [CaseEventInline]
    change_form_template = "admin/chargeflows/chargeflowcase/change_form.html"

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["timeline"] = selectors.case_timeline(case=obj)
            context["preview"] = services.case_preview(case=obj)
            context["may_act"] = request.user.has_perm("chargeflows.change_chargeflowcase")
            context["recipient_form"] = RecipientForm(initial={"email": obj.recipient_email})
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        def view(func):
            return self.admin_site.admin_view(func)

        info = "chargeflows_chargeflowcase"
        return [
            *(
                path(
                    f"<int:object_id>/{action}/",
                    view(partial(self.action_view, action=action)),
                    name=f"{info}_{action.replace('-', '_')}",
                )
                for action in CASE_ACTIONS
            ),
            *super().get_urls(),
        ]

    def action_view(self, request, object_id, action):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        case = self.get_queryset(request).filter(pk=object_id).first()
        if case is None:
            raise Http404
        if not request.user.has_perm("chargeflows.change_chargeflowcase"):
            raise PermissionDenied
        back = HttpResponseRedirect(
            reverse("admin:chargeflows_chargeflowcase_change", args=[case.pk])
        )
        try:
            if action == "next-level":
                services.case_level_start_next_now(case=case, acting_user=request.user)
                messages.success(request, "The next level has started.")
            elif action == "cancel":
                services.case_cancel(case=case, acting_user=request.user)
                messages.success(request, "Collection cancelled; the charge is cancelled.")
            elif action == "recipient":
                form = RecipientForm(request.POST)
                if not form.is_valid():
                    messages.error(request, "Enter a valid email address.")
                    return back
                services.case_recipient_change(
                    case=case, email=form.cleaned_data["email"], acting_user=request.user
                )
                messages.success(request, "The collection's emails now go to the new address.")
            elif action == "copy-link":
                url = services.case_payment_link_url(case=case, acting_user=request.user)
                return TemplateResponse(
                    request,
                    "admin/chargeflows/chargeflowcase/link.html",
                    {**self.admin_site.each_context(request), "opts": self.opts,
                     "original": case, "url": url, "title": "Payment page link"},
                )  # fmt: skip
            else:
                raise Http404
        except ChargeFlowError as exc:
            messages.error(request, exc.message)
        return back


# The per-space dashboard registers its own admin (chargeflows/dashboard.py).
from . import dashboard  # noqa: E402, F401
