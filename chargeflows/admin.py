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
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from unfold.admin import TabularInline
from unfold.decorators import display

from billing.admin import ChargeIssueAdmin
from billing.models import ChargeIssue
from core.admin import WorkQueueFilter, badge_colours
from spaces.admin import (
    ReadOnlyScopedAdmin,
    SpaceScopedFieldListFilter,
    SpaceScopedHistoryAdmin,
)
from spaces.selectors import space_list_for_user

from . import selectors, services
from .exceptions import ChargeFlowError
from .forms import ChargeFlowForm, LevelConfigurationForm, RecipientForm
from .models import (
    ChargeFlow,
    ChargeFlowCase,
    ChargeFlowCaseEvent,
    ChargeFlowCondition,
    ChargeFlowLevel,
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


class ChargeFlowConditionInline(TabularInline):
    model = ChargeFlowCondition
    extra = 0
    fields = ("kind", "min_amount_minor", "max_amount_minor", "value")


class LevelSummaryInline(TabularInline):
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
class ChargeFlowAdmin(VersionedAdminMixin, SpaceScopedHistoryAdmin):
    form = ChargeFlowForm
    list_display = (
        "name",
        "priority",
        "state_badge",
        "space",
        "version",
        "updated_by",
        "updated_at",
    )
    list_filter = ("state", ("space", SpaceScopedFieldListFilter))
    search_fields = ("name",)
    readonly_fields = ("state", "version", "updated_by", "updated_at")
    inlines = [ChargeFlowConditionInline, LevelSummaryInline]
    actions = ["activate", "deactivate", "delete_flow"]

    @display(
        description="state",
        ordering="state",
        label=badge_colours(
            ChargeFlow.State,
            {
                ChargeFlow.State.ACTIVE: "success",
                ChargeFlow.State.INACTIVE: "warning",
                ChargeFlow.State.DELETING: "danger",
            },
        ),
    )
    def state_badge(self, flow):
        return flow.state, flow.get_state_display()

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
class LevelConfigurationAdmin(VersionedAdminMixin, SpaceScopedHistoryAdmin):
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


class CaseEventInline(TabularInline):
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


CASE_STATE_COLOURS = {
    ChargeFlowCase.State.RUNNING: "warning",
    ChargeFlowCase.State.SUCCEEDED: "success",
    ChargeFlowCase.State.FAILED: "danger",
}


class CaseQueueFilter(WorkQueueFilter):
    queues = {
        "attention": (
            "Needing attention",
            lambda request: selectors.cases_needing_attention_q(timezone.now()),
        ),
    }


@admin.register(ChargeFlowCase)
class ChargeFlowCaseAdmin(ReadOnlyScopedAdmin):
    list_display = (
        "id",
        "issue",
        "customer_email",
        "reference",
        "amount",
        "flow",
        "current_level",
        "state_badge",
        "recipient_email",
        "created_at",
    )
    list_filter = (CaseQueueFilter, "state", ("space", SpaceScopedFieldListFilter))
    search_fields = ("recipient_email", "issue__customer_name", "issue__external_reference")
    list_select_related = ("issue", "flow")
    fields = ("issue", "flow", "state", "recipient_email", "created_at", "finished_at")
    readonly_fields = fields
    inlines = [CaseEventInline]
    change_form_template = "admin/chargeflows/chargeflowcase/change_form.html"

    def get_search_results(self, request, queryset, search_term):
        # Indexed lookups, not Django's LIKE '%…%' on every search field (core.search).
        return selectors.case_search(queryset=queryset, text=search_term), False

    def get_queryset(self, request):
        latest = ChargeFlowLevel.objects.filter(case=OuterRef("pk")).order_by("-position")
        return (
            super()
            .get_queryset(request)
            .annotate(
                level_position=Subquery(latest.values("position")[:1]),
                level_name=Subquery(latest.values("configuration__name")[:1]),
            )
        )

    @display(
        description="state",
        ordering="state",
        label=badge_colours(ChargeFlowCase.State, CASE_STATE_COLOURS),
    )
    def state_badge(self, case):
        return case.state, case.get_state_display()

    @display(description="customer email", ordering="issue__customer_email")
    def customer_email(self, case):
        return case.issue.customer_email

    @display(description="reference", ordering="issue__external_reference")
    def reference(self, case):
        return case.issue.external_reference or "–"

    @display(description="amount", ordering="issue__amount_minor")
    def amount(self, case):
        return case.issue.amount_display

    @display(description="level", ordering="level_position")
    def current_level(self, case):
        if getattr(case, "level_position", None) is None:
            return "–"
        return f"{case.level_position}. {case.level_name}"

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


# --- The charge list, with the collection's level (billing does not know about charge flows) --

# Like recurring's customer page: billing's admin registered first, replaced by a subclass.
admin.site.unregister(ChargeIssue)


@admin.register(ChargeIssue)
class ChargeIssueWithFlowLevelAdmin(ChargeIssueAdmin):
    list_display = (
        *ChargeIssueAdmin.list_display[: ChargeIssueAdmin.list_display.index("state_badge") + 1],
        "flow_level",
        *ChargeIssueAdmin.list_display[ChargeIssueAdmin.list_display.index("state_badge") + 1 :],
    )

    def get_queryset(self, request):
        # Two correlated subqueries, evaluated for the page's rows only: no join that would
        # multiply issues by their levels, and the same query count for any page length.
        latest = ChargeFlowLevel.objects.filter(case__issue=OuterRef("pk")).order_by("-position")
        return (
            super()
            .get_queryset(request)
            .annotate(
                flow_level_position=Subquery(latest.values("position")[:1]),
                flow_level_name=Subquery(latest.values("configuration__name")[:1]),
            )
        )

    @display(description="flow level", ordering="flow_level_position")
    def flow_level(self, issue):
        if issue.flow_level_position is None:
            return "–"
        return f"{issue.flow_level_position}. {issue.flow_level_name}"


# The per-space dashboard registers its own admin (chargeflows/dashboard.py).
from . import dashboard  # noqa: E402, F401
