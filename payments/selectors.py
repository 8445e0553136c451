from django.db.models import Q


def provider_events_failed_q() -> Q:
    """Provider events whose processing failed: retried, or given up."""
    return Q(processed_at__isnull=True) & (Q(given_up=True) | Q(tries__gt=0))


def outbound_events_failed_q() -> Q:
    """Our events whose delivery failed: retried, or given up."""
    return Q(delivered_at__isnull=True) & (Q(given_up=True) | Q(tries__gt=0))
