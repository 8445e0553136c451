from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from .models import RecurringLine

DUE_SOON_DAYS = 7


def recurring_line_list(*, queryset: QuerySet[RecurringLine] | None = None):
    """Lines with what their lists show alongside them (customer, card), at a fixed number of
    queries per page."""
    queryset = RecurringLine.objects.all() if queryset is None else queryset
    return queryset.select_related("customer", "card", "space")


def recurring_lines_missing_card(*, queryset=None) -> QuerySet[RecurringLine]:
    """Active lines still without a card, soonest charge first."""
    queryset = RecurringLine.objects.all() if queryset is None else queryset
    return recurring_line_list(
        queryset=queryset.filter(status=RecurringLine.Status.ACTIVE, card__isnull=True)
    ).order_by("charge_date", "pk")


def recurring_lines_due_within(queryset, *, days: int = DUE_SOON_DAYS):
    horizon = timezone.localdate() + timedelta(days=days)
    return queryset.filter(status=RecurringLine.Status.ACTIVE, charge_date__lte=horizon)


def recurring_line_by_public_id(*, space_id: int, public_id) -> RecurringLine | None:
    return (
        recurring_line_list()
        .filter(space_id=space_id, public_id=public_id)
        .select_related("next_generation")
        .first()
    )
