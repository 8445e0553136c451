from django.db.models import Q, QuerySet

from core.search import all_terms, search_id

from .models import ChargeAttempt


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
