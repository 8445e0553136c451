"""Reads of the money path: the admin's searches and work queues, and the dashboard's figures
(what was charged and recovered, and what failed to come in as provider events or go out as our
outbound events). Each is one query whatever the number of rows."""

from datetime import datetime

from django.db.models import Case, Count, Q, QuerySet, Sum, Value, When
from django.db.models.functions import TruncDate

from core.search import all_terms, search_id

from .models import ChargeAttempt, DeliveryAttempt, OutboundEvent, ProviderEvent


def charge_attempt_search(
    *, queryset: QuerySet[ChargeAttempt], text: str
) -> QuerySet[ChargeAttempt]:
    """Attempts matching every word of `text`, each word by any of: the provider payment
    intent or customer id, the idempotency key, or the number of the charging issue it charges.
    Exact matches on indexed columns only (core.search)."""

    def term_match(term: str) -> Q:
        match = (
            Q(provider_payment_intent_id=term)
            | Q(idempotency_key=term)
            | Q(provider_customer_id=term)
        )
        if (pk := search_id(term)) is not None:
            match |= Q(charge_issue_id=pk)
        return match

    condition = all_terms(text, term_match)
    return queryset if condition is None else queryset.filter(condition)


def provider_events_failed_q() -> Q:
    """Provider events whose processing failed: retried, or given up."""
    return Q(processed_at__isnull=True) & (Q(given_up=True) | Q(tries__gt=0))


def outbound_events_failed_q() -> Q:
    """Our events whose delivery failed: retried, or given up."""
    return Q(delivered_at__isnull=True) & (Q(given_up=True) | Q(tries__gt=0))


P = ChargeAttempt.Purpose
# An issue's own charge (a recurring generation charges through its issue) against what a
# charge flow collected after that charge failed. Refunds are neither.
CHARGED_PURPOSES = (P.ISSUE_CHARGE, P.RECURRING_GENERATION)
RECOVERED_PURPOSES = (P.FLOW_LEVEL, P.PAYMENT_LINK)


def attempt_amounts_per_day(*, space_id: int, since: datetime) -> list[dict]:
    """Succeeded charges of the space settled since `since`, summed per day (of the current
    time zone), currency and kind: "charged" (an issue's own charge) or "recovered" (a
    charge-flow level or its payment link). Rows: day, currency, kind, amount_minor, count."""
    return list(
        ChargeAttempt.objects.filter(
            space_id=space_id,
            status=ChargeAttempt.Status.SUCCEEDED,
            finished_at__gte=since,
            purpose__in=CHARGED_PURPOSES + RECOVERED_PURPOSES,
        )
        .annotate(
            day=TruncDate("finished_at"),
            kind=Case(
                When(purpose__in=RECOVERED_PURPOSES, then=Value("recovered")),
                default=Value("charged"),
            ),
        )
        .values("day", "currency", "kind")
        .annotate(amount_minor=Sum("amount_minor"), count=Count("pk"))
        .order_by("day", "currency", "kind")
    )


def outbound_event_failures(*, space_id: int) -> dict:
    """The space's outbound events that every try failed to deliver (given up) and those
    still being retried after a failed try."""
    # Aliases other than the field names: Django refuses an aggregate named like a field.
    counts = OutboundEvent.objects.filter(space_id=space_id).aggregate(
        abandoned=Count("pk", filter=Q(given_up=True)),
        retried=Count("pk", filter=Q(delivered_at__isnull=True, given_up=False, tries__gt=0)),
    )
    return {"given_up": counts["abandoned"], "retrying": counts["retried"]}


def delivery_failure_count(*, space_id: int, since: datetime) -> int:
    """Failed delivery tries of the space's outbound events since `since`."""
    return DeliveryAttempt.objects.filter(
        event__space_id=space_id, attempted_at__gte=since, succeeded=False
    ).count()


def provider_event_failures() -> dict:
    """Provider webhooks whose processing failed: given up after every try, or failed and
    waiting for the next. Provider events belong to no space (an event names the provider's
    objects, not ours), so this is for superusers, over every space."""
    counts = ProviderEvent.objects.aggregate(
        abandoned=Count("pk", filter=Q(given_up=True)),
        retried=Count("pk", filter=Q(processed_at__isnull=True, given_up=False, tries__gt=0)),
    )
    return {"given_up": counts["abandoned"], "retrying": counts["retried"]}
