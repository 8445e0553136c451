from django.db.models import Count, Q, QuerySet

from cards.models import Customer
from core.search import RELATED_LIMIT, all_terms, is_last4, search_id
from payments.models import ChargeAttempt

from .models import FINISHED_STATES, ChargeIssue, ChargeIssueEvent, Refund, RefundEvent


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


def charge_issue_paid_attempt(*, issue_id):
    """The succeeded attempt that charged an issue: its own charge, or the charge-flow level
    or payment link that collected it. None if no attempt of ours charged it."""
    return (
        ChargeAttempt.objects.filter(status=ChargeAttempt.Status.SUCCEEDED)
        .exclude(purpose=ChargeAttempt.Purpose.REFUND)
        .filter(
            Q(charge_issue_id=issue_id)
            | Q(flow_level__case__issue_id=issue_id)
            | Q(payment_link__level__case__issue_id=issue_id)
        )
        .exclude(provider_payment_intent_id="")
        .order_by("-finished_at", "-pk")
        .first()
    )


def refund_list(*, issue_id) -> QuerySet[Refund]:
    """An issue's refunds, newest first, with who requested and approved each."""
    return (
        Refund.objects.filter(issue_id=issue_id)
        .select_related("requested_by", "approved_by")
        .order_by("-created_at", "-pk")
    )


def refund_event_list(*, refund_id) -> QuerySet[RefundEvent]:
    return (
        RefundEvent.objects.filter(refund_id=refund_id)
        .select_related("actor")
        .order_by("created_at", "pk")
    )


def charge_issue_search(*, queryset: QuerySet[ChargeIssue], text: str) -> QuerySet[ChargeIssue]:
    """Issues matching every word of `text`, each word by any of: the issue's number, its
    reference, the customer's email (any case), number or provider id, the card's last 4, the
    provider payment intent of its charge, or a part of the customer's name.

    Exact matches on indexed columns of the issue itself, and the name by a trigram index on
    PostgreSQL, so a search costs a few index scans at any number of issues (core.search).
    """
    condition = all_terms(text, charge_issue_term)
    return queryset if condition is None else queryset.filter(condition)


def charge_issue_term(term: str) -> Q:
    """One word of an issue search (also used by the lists of rows that belong to an issue)."""
    match = (
        Q(customer_name__icontains=term)
        | Q(customer_email__iexact=term)
        | Q(external_reference=term)
        | Q(provider_customer_id=term)
    )
    if (pk := search_id(term)) is not None:
        match |= Q(pk=pk)
    if is_last4(term):
        match |= Q(card_last4=term)
    # Looked up first: a join or subquery inside the OR would make PostgreSQL read every issue.
    customers = list(
        Customer.objects.filter(external_number=term).values_list("pk", flat=True)[:RELATED_LIMIT]
    )
    if customers:
        match |= Q(customer_id__in=customers)
    charged = list(
        ChargeAttempt.objects.filter(
            provider_payment_intent_id=term, charge_issue__isnull=False
        ).values_list("charge_issue_id", flat=True)[:RELATED_LIMIT]
    )
    if charged:
        match |= Q(pk__in=charged)
    return match


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


# The states the queues above draw from (all unfinished: the issue_unfinished index).
CHARGE_ISSUE_QUEUE_STATES = (
    ChargeIssue.State.AWAITING_AMOUNT,
    ChargeIssue.State.RETURNED,
    ChargeIssue.State.AWAITING_APPROVAL,
)

CHARGE_ISSUE_QUEUES = {
    "awaiting_amount": charge_issues_awaiting_amount_q,
    "returned": charge_issues_returned_q,
    "awaiting_approval": charge_issues_awaiting_approval_q,
}


def charge_issue_open_counts(*, space_id: int) -> dict[str, int]:
    """How many of the space's issues wait in each unfinished state (one query)."""
    rows = (
        ChargeIssue.objects.filter(space_id=space_id)
        .exclude(state__in=FINISHED_STATES)
        .values("state")
        # Of a column in the issue_unfinished index (never null), so it is read alone.
        .annotate(count=Count("state"))
        .order_by()
    )
    return {row["state"]: row["count"] for row in rows}


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
