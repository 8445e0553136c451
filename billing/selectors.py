from django.db.models import Q, QuerySet

from .models import ChargeIssue, ChargeIssueEvent


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
