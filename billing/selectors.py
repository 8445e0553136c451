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


def charge_issue_api_get(*, space_id: int, pk: int) -> ChargeIssue | None:
    """One issue of the space, with what the API answers about it; None for another space's."""
    return ChargeIssue.objects.select_related("customer").filter(space_id=space_id, pk=pk).first()


def charge_issue_api_list(
    *,
    space_id: int,
    state: str | None = None,
    customer_id: int | None = None,
    reference: str | None = None,
    created_after=None,
    created_before=None,
    after: tuple | None = None,
) -> QuerySet[ChargeIssue]:
    """The space's issues, newest first by (created_at, id), filtered; `after` = the
    (created_at, id) of the last row of the previous page (keyset pagination, so a page costs
    the same however deep, and rows added meanwhile never shift the pages)."""
    issues = ChargeIssue.objects.filter(space_id=space_id).select_related("customer")
    if state is not None:
        issues = issues.filter(state=state)
    if customer_id is not None:
        issues = issues.filter(customer_id=customer_id)
    if reference is not None:
        issues = issues.filter(external_reference=reference)
    if created_after is not None:
        issues = issues.filter(created_at__gte=created_after)
    if created_before is not None:
        issues = issues.filter(created_at__lt=created_before)
    if after is not None:
        created_at, pk = after
        issues = issues.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=pk))
    return issues.order_by("-created_at", "-pk")
