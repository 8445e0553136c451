from datetime import timedelta

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from billing.models import ChargeIssue
from cards.selectors import payment_cards_expiring

from .models import ExpiringCard, RecurringLine

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


def expiring_card_list(*, queryset=None, today=None) -> QuerySet[ExpiringCard]:
    """Cards within their space's expiry-warning window (cards.selectors), soonest first,
    with their open recurring lines and the issues of running collections prefetched: a fixed
    number of queries per page. Collections are found through the issue's reverse relation
    (`flow_case`), so this room needs no import from chargeflows."""
    queryset = ExpiringCard.objects.all() if queryset is None else queryset
    ids = [card.pk for card in payment_cards_expiring(today=today)]
    open_lines = RecurringLine.objects.filter(
        status__in=(RecurringLine.Status.ACTIVE, RecurringLine.Status.PAUSED)
    ).order_by("charge_date", "pk")
    collected = (
        ChargeIssue.objects.filter(flow_case__state="running")
        .select_related("flow_case")
        .order_by("pk")
    )
    return (
        queryset.filter(pk__in=ids)
        .select_related("customer", "space")
        .prefetch_related(
            Prefetch("recurring_lines", queryset=open_lines, to_attr="open_lines"),
            Prefetch("charge_issues", queryset=collected, to_attr="collected_issues"),
        )
        .order_by("exp_year", "exp_month", "pk")
    )
