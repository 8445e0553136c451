"""The collection path's one lock order. Every transaction that locks more than one of these
rows takes them in this order, and only through the functions below:

    attempt → issue → case → level → link

- attempt: payments' record step locks the attempt first (its conditional UPDATE decides
  which of the worker, the reconciler and a provider webhook records the outcome, and the
  reconciler holds it across its provider lookup); the owner's settled code then locks the
  collection's rows, below, in order. Nothing that holds a collection row ever waits for an
  existing attempt: level runs and payment-link pay only *create* attempts (a row nobody else
  can hold), and staff actions only read them. So no collection row is ever held across a
  provider call, and payments needs to know nothing of this order.
- issue → case → level → link: staff actions (start next level now, cancel, recipient
  change), level runs, the level's and the link's charge claims (payments' begin) and their
  settlement (payments' record). One statement per row, in this order; a row created in the
  transaction (a new level, link or attempt) is nobody else's to wait for.

Waiting, never skipping: these locks wait for their holder. Every holder is a short
transaction, and a level run that skipped a row held by a duplicate copy of its message would
leave the level to wait out its lease.

Hazards: a foreign key counts as touching its target, since inserting a row that points at a
case (an audit event, a new level) takes a KEY SHARE lock on that case, which waits for a FOR
UPDATE. Code that locks a case after its level, or an issue after its case, deadlocks with a
settlement or a staff action: lock here instead. Single-row writes outside a transaction (the
audit row of a copied link) hold nothing while they wait and need no order.
"""

from billing.models import ChargeIssue

from .models import ChargeFlowCase, ChargeFlowLevel, ChargeFlowLevelPaymentLink


def _lock(model, pk) -> None:
    list(model.objects.select_for_update().filter(pk=pk).values_list("pk", flat=True))


def case_locked(case_id: int) -> ChargeFlowCase:
    """Lock a case's issue, then the case; the case as it is now."""
    issue_id = ChargeFlowCase.objects.values_list("issue_id", flat=True).get(pk=case_id)
    _lock(ChargeIssue, issue_id)
    return (
        ChargeFlowCase.objects.select_for_update(of=("self",))
        .select_related("issue", "space", "flow")
        .get(pk=case_id)
    )


def level_locked(level_id: int, **filters) -> ChargeFlowLevel | None:
    """Lock a level's issue, its case, then the level; the level (with its case and issue as
    they are now) if it matches `filters`, else None (its ancestors stay locked)."""
    ids = (
        ChargeFlowLevel.objects.filter(pk=level_id).values_list("case__issue_id", "case_id").first()
    )
    if ids is None:
        return None
    issue_id, case_id = ids
    _lock(ChargeIssue, issue_id)
    _lock(ChargeFlowCase, case_id)
    return (
        ChargeFlowLevel.objects.select_for_update(of=("self",))
        .select_related("case__issue__card", "case__space", "configuration")
        .filter(pk=level_id, **filters)
        .first()
    )


def link_locked(link_id: int, **filters) -> ChargeFlowLevelPaymentLink | None:
    """Lock a payment link's issue, case and level, then the link; the link (with its level,
    case and issue as they are now) if it matches `filters`, else None."""
    ids = (
        ChargeFlowLevelPaymentLink.objects.filter(pk=link_id)
        .values_list("level__case__issue_id", "level__case_id", "level_id")
        .first()
    )
    if ids is None:
        return None
    issue_id, case_id, level_id = ids
    _lock(ChargeIssue, issue_id)
    _lock(ChargeFlowCase, case_id)
    _lock(ChargeFlowLevel, level_id)
    return (
        ChargeFlowLevelPaymentLink.objects.select_for_update(of=("self",))
        .select_related("level__case__issue", "level__case__space", "level__configuration")
        .filter(pk=link_id, **filters)
        .first()
    )
