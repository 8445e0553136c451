"""Field-level history of configuration: who changed what from what (issue 12, §7).

Why django-simple-history and not django-pghistory: pghistory records through PostgreSQL
triggers (django-pgtrigger), and `make run` keeps its database in SQLite, where those triggers
do not exist; simple-history writes its rows from Django's save/delete signals, so it works on
both databases, inside the transaction of the save that caused it (a rolled-back change leaves
no history row).

The price of signals: a queryset `.update()` or `bulk_update()` sends none. The services that
change tracked rows that way (the charge flows' optimistic `UPDATE … WHERE version`, the
recurring lines' card matching) call `history_write()` right after, in the same transaction.

The user of a row comes, in this order, from `instance._history_user` (set by a service that
was given `acting_user`), from `history_acting()` around a block of service code, then from the
request (simple_history's HistoryRequestMiddleware); a task with nobody behind it records none.
The domain audit rows (SpaceEvent, ApiKeyEvent, ChargeFlowCaseEvent, RecurringEvent, …) stay
what they are: they say what happened; these rows add each field's before and after.
"""

from collections.abc import Iterable
from contextlib import contextmanager
from contextvars import ContextVar

from simple_history.models import HistoricalRecords

_acting_user: ContextVar = ContextVar("history_acting_user", default=None)


def history_user(instance, request=None, **kwargs):
    """simple_history's `get_user`: the service's acting user, else the request's user."""
    user = _acting_user.get()
    if user is not None and getattr(user, "is_authenticated", False):
        return user
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    return None


@contextmanager
def history_acting(user):
    """History rows written inside the block name `user` (a service's acting_user)."""
    token = _acting_user.set(user)
    try:
        yield
    finally:
        _acting_user.reset(token)


def history_records(**options) -> HistoricalRecords:
    """The project's HistoricalRecords: users found as described above."""
    return HistoricalRecords(get_user=history_user, **options)


def history_write(model, pks: Iterable[int], *, user=None, reason: str = "") -> int:
    """Write "changed" history rows for rows of `model` that a queryset update changed
    (signals never saw it): their current values, read in the caller's transaction. Returns
    how many rows were written."""
    pks = list(pks)
    if not pks:
        return 0
    if user is None:
        user = history_user(None, getattr(HistoricalRecords.context, "request", None))
    objs = list(model._default_manager.filter(pk__in=pks).order_by("pk"))
    model.history.bulk_history_create(
        objs, update=True, default_user=user, default_change_reason=reason
    )
    return len(objs)
