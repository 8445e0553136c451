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


# --- Work queues (the admin's home page and its "queue" filter) -------------------------------


def charge_issues_awaiting_amount_q(user) -> Q:
    return Q(state=ChargeIssue.State.AWAITING_AMOUNT)


def charge_issues_returned_q(user) -> Q:
    """Returned to the clerk who entered it; one that nobody entered (a recurring line's) is
    every clerk's."""
    return Q(state=ChargeIssue.State.RETURNED) & (Q(entered_by=user) | Q(entered_by__isnull=True))


def charge_issues_awaiting_approval_q(user) -> Q:
    """Four eyes: what the user entered is never theirs to approve."""
    return Q(state=ChargeIssue.State.AWAITING_APPROVAL) & (
        ~Q(entered_by=user) | Q(entered_by__isnull=True)
    )


CHARGE_ISSUE_QUEUES = {
    "awaiting_amount": charge_issues_awaiting_amount_q,
    "returned": charge_issues_returned_q,
    "awaiting_approval": charge_issues_awaiting_approval_q,
}
