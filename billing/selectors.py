from django.db.models import Count, Q, QuerySet

from .models import FINISHED_STATES, ChargeIssue, ChargeIssueEvent


def charge_issue_list(*, queryset: QuerySet[ChargeIssue] | None = None) -> QuerySet[ChargeIssue]:
    """Issues with what their pages show alongside them (space, who entered, who approved), so
    a page of any length costs the same number of queries."""
    queryset = ChargeIssue.objects.all() if queryset is None else queryset
    return queryset.select_related("space", "entered_by", "approved_by")


def charge_issue_event_list(*, issue_id) -> QuerySet[ChargeIssueEvent]:
    """An issue's audit trail, oldest first, with who did each step."""
    return (
        ChargeIssueEvent.objects.filter(issue_id=issue_id)
        .select_related("actor")
        .order_by("created_at", "pk")
    )


def charge_issue_due_q(now) -> Q:
    """The due rule, the one place it is written: approved, and its charge date (if any) has
    come. (billing.charging.IssueCharge.DUE_SQL is the same rule for the single statement.)"""
    return Q(state=ChargeIssue.State.APPROVED) & (
        Q(charge_date__isnull=True) | Q(charge_date__lte=now)
    )


def charge_issue_open_counts(*, space_id: int) -> dict[str, int]:
    """How many of the space's issues wait in each unfinished state (one query)."""
    rows = (
        ChargeIssue.objects.filter(space_id=space_id)
        .exclude(state__in=FINISHED_STATES)
        .values("state")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return {row["state"]: row["count"] for row in rows}
