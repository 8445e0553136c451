"""Charging issues in the admin: read-only pages plus one real view per human step.

Every step view follows the same shape (like Django's own password change view): find the issue
among the user's spaces (404 otherwise), check the step's permission (403), check the state,
validate a form, make ONE service call, report with `messages`, redirect. The services remain
the authority on every rule; the checks here only keep people off pages that cannot work.
"""

import copy
import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from unfold.admin import TabularInline
from unfold.decorators import display

from core import money
from core.admin import WorkQueueFilter, admin_refusal_page, badge_colours, object_id_or_404
from core.errors import form_add_domain_error, message_refusal
from spaces.admin import ReadOnlyScopedAdmin, SpaceScopedFieldListFilter

from . import (
    admin_keys,  # noqa: F401 - registers the API key admin
    notifications,
    refunds,
    selectors,
    services,
)
from .exceptions import BillingError
from .forms import (
    ChargeAmountEntryForm,
    ChargeApprovalForm,
    ChargeCancelForm,
    RefundApprovalForm,
    RefundRequestForm,
)
from .models import (
    FINISHED_STATES,
    TRANSITIONS,
    ChargeIssue,
    ChargeIssueEvent,
    Refund,
    RefundEvent,
)

logger = logging.getLogger(__name__)
State = ChargeIssue.State


@dataclass(frozen=True)
class Step:
    """A human step on an issue: the states it starts from and who may take it (any of)."""

    name: str
    label: str
    states: frozenset[str]
    permissions: tuple[str, ...]
    post_only: bool = False
    # The four-eyes rule: whoever entered the amount is not offered this step.
    refuses_enterer: bool = False
    # The page the change page's button opens, if not the step's own URL (a confirmation).
    page: str = ""
    # A refund: offered only while some of the charge is left to refund (not yet refunded
    # and not held by an open refund).
    needs_amount_left: bool = False

    @property
    def url_name(self) -> str:
        return f"admin:billing_chargeissue_{self.name}"

    @property
    def page_url_name(self) -> str:
        return f"admin:billing_chargeissue_{self.page or self.name}"

    def allowed(self, user) -> bool:
        return any(user.has_perm(permission) for permission in self.permissions)

    def available(self, issue: ChargeIssue, user) -> bool:
        if self.refuses_enterer and issue.entered_by_id == user.pk:
            return False
        if issue.state not in self.states or not self.allowed(user):
            return False
        return not self.needs_amount_left or refunds.refund_left_minor(issue=issue) > 0


def _states_leading_to(target: str) -> frozenset[str]:
    """Where a step may start: read off the one transition table, never restated here."""
    return frozenset(state for state, targets in TRANSITIONS.items() if target in targets)


ENTER_AMOUNT = Step(
    "enter_amount",
    "1. Charge amount entry",
    _states_leading_to(State.AWAITING_APPROVAL),
    ("billing.enter_amount",),
)
APPROVAL = Step(
    "approval",
    "Approval",
    _states_leading_to(State.APPROVED),
    ("billing.approve_charge",),
    refuses_enterer=True,
)
RESTART = Step(
    "restart",
    "Start a new charge with these data",
    FINISHED_STATES,
    ("billing.enter_amount",),
    post_only=True,
    # A new charge is a step to confirm: the button opens a page that says what is copied.
    page="restart_confirm",
)
CANCEL = Step(
    "cancel",
    "Cancel this charge",
    # Up to the moment the charge starts; after that only the provider's outcome ends it. A
    # collecting charge is cancelled with its collection (the charge flow's case page).
    _states_leading_to(State.CANCELLED) - {State.COLLECTING},
    ("billing.enter_amount", "billing.approve_charge"),
)
SEND_TO_COLLECTION = Step(
    "send_to_collection",
    "Send to collection (charge flow)",
    frozenset({State.APPROVED}),
    ("billing.approve_charge",),
    post_only=True,
)
REFUND_REQUEST = Step(
    "refund",
    "Request a refund",
    frozenset({State.SUCCEEDED}),
    (refunds.REQUEST_PERMISSION,),
    needs_amount_left=True,
)
# A step on one of the issue's refunds (its URL takes the refund's id too).
REFUND_APPROVAL = Step(
    "refund_approval",
    "Refund approval",
    frozenset({Refund.State.AWAITING_APPROVAL}),
    (refunds.APPROVE_PERMISSION,),
)
STEPS = (ENTER_AMOUNT, APPROVAL, RESTART, CANCEL, SEND_TO_COLLECTION, REFUND_REQUEST)


class ChargeIssueQueueFilter(WorkQueueFilter):
    queues = {
        "awaiting_amount": (
            "Awaiting amount entry",
            lambda request: selectors.charge_issues_awaiting_amount_q(request.user),
        ),
        "returned": (
            "Returned to me",
            lambda request: selectors.charge_issues_returned_q(request.user),
        ),
        "awaiting_approval": (
            "To approve",
            lambda request: selectors.charge_issues_awaiting_approval_q(request.user),
        ),
    }


# The colour of each state's badge in lists: what needs a person, what is under way, how it ended.
STATE_COLOURS = {
    State.AWAITING_AMOUNT: "warning",
    State.RETURNED: "danger",
    State.AWAITING_APPROVAL: "info",
    State.APPROVED: "primary",
    State.CHARGING: "primary",
    State.COLLECTING: "warning",
    State.SUCCEEDED: "success",
    State.FAILED: "danger",
    # cancelled: grey, the default
}
SOURCE_COLOURS = {
    ChargeIssue.Source.RESTART: "info",
    ChargeIssue.Source.RECURRING: "primary",
}


class ChargeIssueEventInline(TabularInline):
    """The issue's history, oldest first. Only services write it."""

    model = ChargeIssueEvent
    verbose_name = "history entry"
    verbose_name_plural = "history"
    extra = 0
    can_delete = False
    ordering = ("created_at", "pk")
    fields = ("created_at", "action_label", "actor_name", "from_label", "to_label", "comment")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")

    # Whoever may see the issue may see its history; roles carry no separate event permission.
    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("billing.view_chargeissue")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="user")
    def actor_name(self, event):
        return event.actor.get_username() if event.actor_id else "system"

    @admin.display(description="action")
    def action_label(self, event):
        return event.action_label

    @admin.display(description="from")
    def from_label(self, event):
        return event.from_state_label

    @admin.display(description="to")
    def to_label(self, event):
        return event.to_state_label


@admin.register(ChargeIssue)
class ChargeIssueAdmin(ReadOnlyScopedAdmin):
    list_display = (
        "id",
        "customer_name",
        "customer_email",
        "external_reference",
        "source_label",
        "card_display",
        "amount_display",
        "state_badge",
        "charge_date",
        "created_at",
        "entered_by",
        "approved_by",
    )
    # Only the user's own spaces are offered (the plain filter would list every space's name).
    list_filter = (
        ChargeIssueQueueFilter,
        "state",
        ("space", SpaceScopedFieldListFilter),
        "created_at",
        "charge_date",
    )
    search_fields = (
        "customer_name",
        "customer_email",
        "customer__external_number",
        "card_last4",
        "external_reference",
    )
    list_select_related = ("entered_by", "approved_by")
    fieldsets = (
        (
            "Customer (inherited, read-only)",
            {"fields": ("customer_name", "customer_email", "provider_customer_id", "card_last4")},
        ),
        (
            "Charge",
            {
                "fields": (
                    "amount_display",
                    "refunded_display",
                    "notification_subject",
                    "notification_body",
                    "charge_date",
                )
            },
        ),
        (
            "State",
            {
                "fields": (
                    "state",
                    "entered_by",
                    "entered_at",
                    "approved_by",
                    "approved_at",
                    "failure_code",
                    "failure_message",
                    "hard_decline",
                )
            },
        ),
        (
            "Origin",
            {
                "fields": (
                    "space",
                    "customer",
                    "card",
                    "source",
                    "external_reference",
                    "restarted_from",
                    "created_at",
                    "updated_at",
                )
            },
        ),
    )
    readonly_fields = tuple(
        field for _, options in fieldsets for field in options["fields"]
    )  # every field: issues change only through the step views below
    inlines = [ChargeIssueEventInline]

    @display(description="amount", ordering="amount_minor")
    def amount_display(self, issue):
        return issue.amount_display

    @admin.display(description="refunded")
    def refunded_display(self, issue):
        return issue.refunded_display

    def get_search_results(self, request, queryset, search_term):
        # Indexed lookups, not Django's LIKE '%…%' on every search field (core.search).
        return selectors.charge_issue_search(queryset=queryset, text=search_term), False

    @display(description="state", ordering="state", label=badge_colours(State, STATE_COLOURS))
    def state_badge(self, issue):
        return issue.state, issue.get_state_display()

    @display(
        description="source",
        ordering="source",
        label=badge_colours(ChargeIssue.Source, SOURCE_COLOURS),
    )
    def source_label(self, issue):
        return issue.source, issue.get_source_display()

    @display(description="card", ordering="card_last4")
    def card_display(self, issue):
        return f"•••• {issue.card_last4}"

    # Issues are started by card registrations, the API or 1r. restart, never typed in here;
    # they change only through the step views.

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["charge_steps"] = [step for step in STEPS if step.available(obj, request.user)]
            context["refunds"] = selectors.refund_list(issue_id=obj.pk)
            context["may_approve_refunds"] = REFUND_APPROVAL.allowed(request.user)
            context["state_colour"] = STATE_COLOURS.get(obj.state, "")
        return super().render_change_form(request, context, add, change, form_url, obj)

    def history_view(self, request, object_id, extra_context=None):
        # The audit trail the services write, instead of Django's LogEntry (always empty here).
        # history_view itself checks the space (via get_queryset) and the view permission
        # before the template evaluates this lazy queryset. The id is checked first: filtering
        # on "abc" would raise ValueError (a 500) before Django's view could answer.
        issue_id = object_id_or_404(self.opts, unquote(object_id))
        events = selectors.charge_issue_event_list(issue_id=issue_id)
        return super().history_view(
            request, object_id, extra_context={"charge_events": events, **(extra_context or {})}
        )

    # --- Step views -------------------------------------------------------------------------

    def get_urls(self):
        def view(func):
            return self.admin_site.admin_view(func)

        info = "billing_chargeissue"
        return [
            path(
                "<int:object_id>/enter-amount/",
                view(self.enter_amount_view),
                name=f"{info}_enter_amount",
            ),
            path("<int:object_id>/approval/", view(self.approval_view), name=f"{info}_approval"),
            path("<int:object_id>/restart/", view(self.restart_view), name=f"{info}_restart"),
            path(
                "<int:object_id>/restart/confirm/",
                view(self.restart_confirm_view),
                name=f"{info}_restart_confirm",
            ),
            path("<int:object_id>/cancel/", view(self.cancel_view), name=f"{info}_cancel"),
            path(
                "<int:object_id>/send-to-collection/",
                view(self.send_to_collection_view),
                name=f"{info}_send_to_collection",
            ),
            path("<int:object_id>/refund/", view(self.refund_view), name=f"{info}_refund"),
            path(
                "<int:object_id>/refunds/<int:refund_id>/approval/",
                view(self.refund_approval_view),
                name=f"{info}_refund_approval",
            ),
            *super().get_urls(),
        ]

    def _step_issue(self, request, object_id: int, step: Step) -> ChargeIssue:
        # Another space's issue is a 404 whatever the user's role, so its existence stays
        # hidden; and nothing is written into its history (a refusal is audited only in the
        # user's own spaces).
        issue = (
            selectors.charge_issue_list(queryset=self.get_queryset(request))
            .filter(pk=object_id)
            .first()
        )
        if issue is None:
            raise Http404
        if not step.allowed(request.user):
            if step is APPROVAL and request.method == "POST":
                services.charge_issue_approval_refusal_record(
                    issue_id=issue.pk, acting_user=request.user, code="wrong_role"
                )
            # The project's 403 page: an admin page that says so and leads back.
            raise PermissionDenied
        return issue

    def _change_url(self, issue: ChargeIssue) -> str:
        return reverse("admin:billing_chargeissue_change", args=[issue.pk])

    def _wrong_state(self, request, issue: ChargeIssue, step: Step):
        messages.error(
            request,
            f"“{step.label}” is not possible while charge #{issue.pk} is "
            f"“{issue.get_state_display()}”.",
        )
        return HttpResponseRedirect(self._change_url(issue))

    def _log_refusal(self, request, issue: ChargeIssue, exc: BillingError, step: Step) -> None:
        logger.info(
            "%s refused on issue %s for user %s: %s", step.name, issue.pk, request.user.pk, exc.code
        )

    def _render_step(self, request, issue, step: Step, form, template: str, **context):
        return TemplateResponse(
            request,
            f"admin/billing/chargeissue/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": f"{step.label}: charge #{issue.pk}",
                "original": issue,
                "step": step,
                "form": form,
                "events": selectors.charge_issue_event_list(issue_id=issue.pk),
                "has_view_permission": self.has_view_permission(request, issue),
                **context,
            },
        )

    def enter_amount_view(self, request, object_id):
        issue = self._step_issue(request, object_id, ENTER_AMOUNT)
        if issue.state not in ENTER_AMOUNT.states:
            return self._wrong_state(request, issue, ENTER_AMOUNT)
        if request.method == "POST":
            form = ChargeAmountEntryForm(request.POST)
            if "preview" in request.POST:
                # Show the email as the customer would get it; nothing is saved.
                return self._render_enter_amount(request, issue, form, preview=True)
            if form.is_valid():
                try:
                    services.charge_amount_enter(
                        issue=issue,
                        acting_user=request.user,
                        amount=form.cleaned_data["amount"],
                        currency=form.cleaned_data["currency"],
                        notification_subject=form.cleaned_data["notification_subject"],
                        notification_body=form.cleaned_data["notification_body"],
                        charge_date=form.cleaned_data["charge_date"],
                    )
                except BillingError as exc:
                    self._log_refusal(request, issue, exc, ENTER_AMOUNT)
                    form_add_domain_error(form, exc)
                else:
                    messages.success(
                        request, f"The amount of charge #{issue.pk} was entered for approval."
                    )
                    return HttpResponseRedirect(self._change_url(issue))
        else:
            initial = ChargeAmountEntryForm.initial_for(issue)
            language = request.GET.get("wording", "")
            if language not in dict(settings.LANGUAGES):
                language = ""
            if language or not (issue.notification_subject or issue.notification_body):
                # "Use this wording" (?wording=de), or a charge with no wording yet: the
                # space's default in that language, else in the customer's.
                wording = notifications.default_wording(
                    space=issue.space, language=language or issue.customer.preferred_language
                )
                initial["notification_subject"] = wording["subject"]
                initial["notification_body"] = wording["body"]
            form = ChargeAmountEntryForm(initial=initial)
        return self._render_enter_amount(request, issue, form)

    def _render_enter_amount(self, request, issue, form, preview=False):
        returned = (
            selectors.charge_issue_event_list(issue_id=issue.pk).filter(action="returned").last()
            if issue.state == State.RETURNED
            else None
        )
        context = {
            "return_event": returned,
            "wordings": notifications.wording_languages(space=issue.space),
            "customer_language": issue.customer.get_preferred_language_display(),
        }
        if preview:
            data = form.data
            draft = copy.copy(issue)
            draft.notification_subject = data.get("notification_subject", "")
            draft.notification_body = data.get("notification_body", "")
            draft.currency = data.get("currency") or issue.currency
            try:
                draft.amount_minor = money.to_minor(data.get("amount", ""), draft.currency)
            except money.MoneyError:
                draft.amount_minor = None
            draft.charge_date = None
            context["preview"] = notifications.notification_preview(issue=draft)
        return self._render_step(request, issue, ENTER_AMOUNT, form, "enter_amount.html", **context)

    def approval_view(self, request, object_id):
        issue = self._step_issue(request, object_id, APPROVAL)
        if issue.state not in APPROVAL.states:
            return self._wrong_state(request, issue, APPROVAL)
        if request.method != "POST" and issue.entered_by_id == request.user.pk:
            # Four eyes: the page is not offered to whoever entered the amount; someone who
            # opens it anyway is told why, inside the admin, with the way back to the charge.
            return admin_refusal_page(
                request,
                self.admin_site,
                message="You entered the amount of this charge, so someone else must approve "
                "it (four eyes).",
                back_url=self._change_url(issue),
            )
        form = ChargeApprovalForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            if form.cleaned_data["decision"] == ChargeApprovalForm.APPROVE:
                try:
                    services.charge_issue_approve(
                        issue=issue, acting_user=request.user, comment=form.cleaned_data["comment"]
                    )
                except BillingError as exc:
                    # E.g. the four-eyes refusal, which the service has already audited.
                    self._log_refusal(request, issue, exc, APPROVAL)
                    message_refusal(request, exc)
                else:
                    messages.success(request, f"Charge #{issue.pk} was approved.")
                return HttpResponseRedirect(self._change_url(issue))
            try:
                services.charge_issue_return(
                    issue=issue, acting_user=request.user, comment=form.cleaned_data["comment"]
                )
            except BillingError as exc:
                self._log_refusal(request, issue, exc, APPROVAL)
                form_add_domain_error(form, exc)
            else:
                messages.success(request, f"Charge #{issue.pk} was returned to the clerk.")
                return HttpResponseRedirect(self._change_url(issue))
        return self._render_step(request, issue, APPROVAL, form, "approval.html")

    def restart_confirm_view(self, request, object_id):
        """1r. asks first: what the new charge copies, and one button that starts it."""
        issue = self._step_issue(request, object_id, RESTART)
        if issue.state not in RESTART.states:
            return self._wrong_state(request, issue, RESTART)
        return self._render_step(request, issue, RESTART, None, "restart_confirm.html")

    def restart_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        issue = self._step_issue(request, object_id, RESTART)
        if issue.state not in RESTART.states:
            return self._wrong_state(request, issue, RESTART)
        try:
            new = services.charge_issue_restart(issue=issue, acting_user=request.user)
        except BillingError as exc:
            self._log_refusal(request, issue, exc, RESTART)
            message_refusal(request, exc)
            return HttpResponseRedirect(self._change_url(issue))
        messages.success(
            request,
            f"Charge #{new.pk} was started with the data of charge #{issue.pk}. "
            "Check the amount and wording, then submit it for approval.",
        )
        return HttpResponseRedirect(
            reverse("admin:billing_chargeissue_enter_amount", args=[new.pk])
        )

    def send_to_collection_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        issue = self._step_issue(request, object_id, SEND_TO_COLLECTION)
        if issue.state not in SEND_TO_COLLECTION.states:
            return self._wrong_state(request, issue, SEND_TO_COLLECTION)
        try:
            services.charge_issue_send_to_collection(issue=issue, acting_user=request.user)
        except BillingError as exc:
            self._log_refusal(request, issue, exc, SEND_TO_COLLECTION)
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Charge #{issue.pk} is collected by its charge flow.")
        return HttpResponseRedirect(self._change_url(issue))

    def cancel_view(self, request, object_id):
        issue = self._step_issue(request, object_id, CANCEL)
        if issue.state not in CANCEL.states:
            return self._wrong_state(request, issue, CANCEL)
        form = ChargeCancelForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                services.charge_issue_cancel(
                    issue=issue, acting_user=request.user, comment=form.cleaned_data["comment"]
                )
            except BillingError as exc:
                self._log_refusal(request, issue, exc, CANCEL)
                message_refusal(request, exc)
            else:
                messages.success(request, f"Charge #{issue.pk} was cancelled.")
            return HttpResponseRedirect(self._change_url(issue))
        return self._render_step(request, issue, CANCEL, form, "cancel.html")

    # --- Refunds ----------------------------------------------------------------------------

    def refund_view(self, request, object_id):
        issue = self._step_issue(request, object_id, REFUND_REQUEST)
        if issue.state not in REFUND_REQUEST.states:
            return self._wrong_state(request, issue, REFUND_REQUEST)
        form = RefundRequestForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                refund = refunds.refund_request(
                    issue=issue,
                    acting_user=request.user,
                    amount=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                )
            except BillingError as exc:
                self._log_refusal(request, issue, exc, REFUND_REQUEST)
                form_add_domain_error(form, exc)
            else:
                if refund.state == Refund.State.APPROVED:
                    text = f"Refund #{refund.pk} of {refund.amount_display} is being made."
                else:
                    text = (
                        f"Refund #{refund.pk} of {refund.amount_display} waits for an "
                        "approver's decision."
                    )
                messages.success(request, text)
                return HttpResponseRedirect(self._change_url(issue))
        return self._render_step(
            request,
            issue,
            REFUND_REQUEST,
            form,
            "refund.html",
            refunds=selectors.refund_list(issue_id=issue.pk),
            left=money.format_money(refunds.refund_left_minor(issue=issue), issue.currency),
        )

    def refund_approval_view(self, request, object_id, refund_id):
        issue = (
            selectors.charge_issue_list(queryset=self.get_queryset(request))
            .filter(pk=object_id)
            .first()
        )
        # The refund of an issue found among the user's spaces (the database keeps a refund
        # in its issue's space): another space's is a 404, and nothing is written into it.
        refund = None if issue is None else issue.refunds.filter(pk=refund_id).first()
        if refund is None:
            raise Http404
        if not REFUND_APPROVAL.allowed(request.user):
            if request.method == "POST":
                refunds.refund_approval_refusal_record(
                    refund_id=refund.pk, acting_user=request.user, code="wrong_role"
                )
            raise PermissionDenied
        if refund.state not in REFUND_APPROVAL.states:
            messages.error(
                request,
                f"Refund #{refund.pk} is “{refund.get_state_display()}”: there is nothing to "
                "decide.",
            )
            return HttpResponseRedirect(self._change_url(issue))
        form = RefundApprovalForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            comment = form.cleaned_data["comment"]
            try:
                if form.cleaned_data["decision"] == RefundApprovalForm.APPROVE:
                    refunds.refund_approve(refund=refund, acting_user=request.user, comment=comment)
                    text = f"Refund #{refund.pk} was approved and is being made."
                else:
                    refunds.refund_reject(refund=refund, acting_user=request.user, comment=comment)
                    text = f"Refund #{refund.pk} was rejected."
            except BillingError as exc:
                # E.g. the four-eyes refusal, which the service has already audited.
                self._log_refusal(request, issue, exc, REFUND_APPROVAL)
                if exc.field in form.fields:
                    form_add_domain_error(form, exc)
                else:
                    message_refusal(request, exc)
                    return HttpResponseRedirect(self._change_url(issue))
            else:
                messages.success(request, text)
                return HttpResponseRedirect(self._change_url(issue))
        return self._render_step(
            request,
            issue,
            REFUND_APPROVAL,
            form,
            "refund_approval.html",
            refund=refund,
            refund_events=selectors.refund_event_list(refund_id=refund.pk),
        )


class RefundEventInline(admin.TabularInline):
    """A refund's history, oldest first. Only services write it."""

    model = RefundEvent
    verbose_name = "history entry"
    verbose_name_plural = "history"
    extra = 0
    can_delete = False
    ordering = ("created_at", "pk")
    fields = ("created_at", "action", "actor_name", "from_state", "to_state", "comment")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("billing.view_refund")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="user")
    def actor_name(self, event):
        return event.actor.get_username() if event.actor_id else "system"


@admin.register(Refund)
class RefundAdmin(ReadOnlyScopedAdmin):
    """Refunds, to find those awaiting a decision; requested and decided on the charge's page."""

    list_display = (
        "id",
        "issue_link",
        "amount_display",
        "state",
        "requested_by",
        "approved_by",
        "created_at",
    )
    list_filter = ("state", ("space", SpaceScopedFieldListFilter), "created_at")
    search_fields = ("issue__customer_name", "issue__customer_email", "provider_refund_id")
    list_select_related = ("issue", "requested_by", "approved_by")
    fields = (
        "issue_link",
        "amount_display",
        "reason",
        "state",
        "requested_by",
        "approved_by",
        "approved_at",
        "provider_payment_intent_id",
        "provider_refund_id",
        "failure_code",
        "failure_message",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
    inlines = [RefundEventInline]

    @admin.display(description="charge")
    def issue_link(self, refund):
        url = reverse("admin:billing_chargeissue_change", args=[refund.issue_id])
        return format_html('<a href="{}">{}</a>', url, refund.issue)

    @admin.display(description="amount", ordering="amount_minor")
    def amount_display(self, refund):
        return refund.amount_display
