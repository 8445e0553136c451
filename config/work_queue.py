"""The admin's home page: what waits for this person, and the counts in the sidebar.

Reads only (selectors across billing, chargeflows and payments, which is why this sits at the
top, in config/). Every queue is scoped to the user's spaces (provider events belong to no
space: only those who may view them see them). The page costs a fixed number of queries
whatever the data: one per queue for its first rows, plus one per model for all the counts
(the sidebar's badges read the same counts, computed once per request).
"""

from dataclasses import dataclass

from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from billing.models import ChargeIssue
from billing.selectors import CHARGE_ISSUE_QUEUE_STATES as ISSUE_QUEUE_STATES
from billing.selectors import CHARGE_ISSUE_QUEUES as ISSUE_QUEUES
from chargeflows.models import ChargeFlowCase
from chargeflows.selectors import FAILED_CASE_ATTENTION_DAYS, cases_needing_attention_q
from payments.models import OutboundEvent, ProviderEvent
from payments.selectors import outbound_events_failed_q, provider_events_failed_q
from spaces.selectors import space_list_for_user

ROWS = 5


@dataclass(frozen=True)
class Queue:
    key: str
    title: str
    description: str
    permission: str
    url: str


def _changelist(name: str, **params) -> str:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    url = reverse(f"admin:{name}_changelist")
    return f"{url}?{query}" if query else url


def queues() -> tuple[Queue, ...]:
    return (
        Queue(
            "awaiting_amount",
            "Awaiting amount entry",
            "Charges waiting for 1. charge amount entry.",
            "billing.enter_amount",
            _changelist("billing_chargeissue", queue="awaiting_amount"),
        ),
        Queue(
            "returned",
            "Returned to me",
            "Charges an approver sent back to you, with their comment.",
            "billing.enter_amount",
            _changelist("billing_chargeissue", queue="returned"),
        ),
        Queue(
            "awaiting_approval",
            "To approve",
            "Charges someone else entered, waiting for an approver.",
            "billing.approve_charge",
            _changelist("billing_chargeissue", queue="awaiting_approval"),
        ),
        Queue(
            "collections",
            "Collections needing attention",
            "Collections waiting on the customer's payment link, and collections that ended "
            f"without payment in the last {FAILED_CASE_ATTENTION_DAYS} days.",
            "chargeflows.view_chargeflowcase",
            _changelist("chargeflows_chargeflowcase", queue="attention"),
        ),
        Queue(
            "provider_events",
            "Failed provider webhooks",
            "Provider events that could not be processed (retried, or given up).",
            "payments.view_providerevent",
            _changelist("payments_providerevent", queue="failed"),
        ),
        Queue(
            "deliveries",
            "Failed deliveries",
            "Our events to your systems whose delivery failed (retried, or given up).",
            "payments.view_outboundevent",
            _changelist("payments_outboundevent", queue="failed"),
        ),
    )


# --- Selectors --------------------------------------------------------------------------------


def _scoped(queryset, user, space_field="space"):
    if user.is_superuser:
        return queryset
    return queryset.filter(**{f"{space_field}__in": space_list_for_user(user=user).values("pk")})


def _allowed(user) -> set[str]:
    return {queue.key for queue in queues() if user.has_perm(queue.permission)}


def work_queue_counts(*, request) -> dict[str, int]:
    """{queue key: count} of the queues this user may see; computed once per request (the
    sidebar asks for each badge separately). At most three queries."""
    cached = getattr(request, "_work_queue_counts", None)
    if cached is not None:
        return cached
    user = request.user
    allowed = _allowed(user)
    counts: dict[str, int] = {}
    # Counted over the queue states only, of columns issue_unfinished holds: an index-only
    # scan (COUNT(id) or no state filter read every issue: 90 ms at a million issues,
    # bench/admin_scale.py).
    issue_counts = {
        key: Count("state", filter=rule(user))
        for key, rule in ISSUE_QUEUES.items()
        if key in allowed
    }
    if issue_counts:
        counts.update(
            _scoped(ChargeIssue.objects.filter(state__in=ISSUE_QUEUE_STATES), user).aggregate(
                **issue_counts
            )
        )
    if "collections" in allowed:
        counts["collections"] = (
            _scoped(ChargeFlowCase.objects.all(), user)
            .filter(cases_needing_attention_q(timezone.now()))
            .count()
        )
    if "provider_events" in allowed:
        counts["provider_events"] = ProviderEvent.objects.filter(provider_events_failed_q()).count()
    if "deliveries" in allowed:
        counts["deliveries"] = (
            _scoped(OutboundEvent.objects.all(), user).filter(outbound_events_failed_q()).count()
        )
    request._work_queue_counts = counts
    return counts


def work_queue_rows(*, user, key: str, limit: int = ROWS) -> list:
    """The first rows of one queue, oldest first (what has waited longest comes first)."""
    now = timezone.now()
    if key in ISSUE_QUEUES:
        return list(
            _scoped(ChargeIssue.objects.all(), user)
            .filter(ISSUE_QUEUES[key](user))
            .select_related("entered_by")
            .order_by("updated_at", "pk")[:limit]
        )
    if key == "collections":
        return list(
            _scoped(ChargeFlowCase.objects.all(), user)
            .filter(cases_needing_attention_q(now))
            .select_related("issue", "flow")
            .order_by("created_at", "pk")[:limit]
        )
    if key == "provider_events":
        return list(
            ProviderEvent.objects.filter(provider_events_failed_q()).order_by("received_at", "pk")[
                :limit
            ]
        )
    if key == "deliveries":
        return list(
            _scoped(OutboundEvent.objects.all(), user)
            .filter(outbound_events_failed_q())
            .select_related("space")
            .order_by("created_at", "pk")[:limit]
        )
    raise KeyError(key)


def work_queue(*, request) -> list[dict]:
    """The home page's sections: each queue this user may see, with its count and first rows."""
    counts = work_queue_counts(request=request)
    return [
        {
            "queue": queue,
            "count": counts[queue.key],
            "rows": work_queue_rows(user=request.user, key=queue.key) if counts[queue.key] else [],
        }
        for queue in queues()
        if queue.key in counts
    ]


# --- Unfold hooks (settings.UNFOLD) -----------------------------------------------------------


def dashboard_callback(request, context):
    """DASHBOARD_CALLBACK: the home page is this person's work queue."""
    context["work_queue"] = work_queue(request=request)
    return context


def _badge(key):
    def badge(request):
        return work_queue_counts(request=request).get(key, 0)

    badge.__name__ = f"badge_{key}"
    return badge


badge_awaiting_amount = _badge("awaiting_amount")
badge_returned = _badge("returned")
badge_awaiting_approval = _badge("awaiting_approval")
badge_collections = _badge("collections")
badge_provider_events = _badge("provider_events")
badge_deliveries = _badge("deliveries")

ICONS = {
    "awaiting_amount": "edit_note",
    "returned": "undo",
    "awaiting_approval": "fact_check",
    "collections": "running_with_errors",
    "provider_events": "webhook",
    "deliveries": "outbox",
}


def sidebar_navigation(request) -> list[dict]:
    """SIDEBAR["navigation"]: the work queues with their counts, then every admin page this
    user may open, grouped by app (the admin site's own permission-checked app list)."""
    user = request.user
    allowed = _allowed(user)
    # The same per-request counts the badges show (no query of its own): red when work waits.
    counts = work_queue_counts(request=request) if allowed else {}
    work = [
        {"title": "Home", "icon": "home", "link": reverse("admin:index")},
        *(
            {
                "title": queue.title,
                "icon": ICONS[queue.key],
                "link": queue.url,
                "badge": f"config.work_queue.badge_{queue.key}",
                "badge_variant": "danger" if counts.get(queue.key) else "success",
            }
            for queue in queues()
            if queue.key in allowed
        ),
    ]
    from django.contrib import admin

    apps = [
        {
            "title": app["name"],
            "items": [
                {"title": model["name"], "link": model["admin_url"]}
                for model in app["models"]
                if model.get("admin_url")
            ],
        }
        for app in admin.site.get_app_list(request)
    ]
    return [{"title": "Work queue", "items": work}, *apps]
