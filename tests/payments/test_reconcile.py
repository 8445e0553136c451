"""The reconciler holds no transaction or row lock while it waits for the provider, and each run
stops at its deadline, leaving the rest to the next.

The provider is localstripe over HTTP; the gateway functions the reconciler calls are wrapped by
a spy that only records, at the moment of each call, whether this connection is inside a
transaction and whether another database session can lock the attempts, then calls through.
"""

from datetime import timedelta

import psycopg
import pytest
from django.db import connection

from billing.models import ChargeIssue
from payments import attempts, gateway
from payments.models import ChargeAttempt

Status = ChargeAttempt.Status


def _crashed_before_the_call(charge_approved, monkeypatch) -> ChargeIssue:
    """An attempt committed, and the worker died before the provider was called: no charge."""

    def killed(**kwargs):
        raise SystemExit("worker killed before the call")  # fault injection

    with monkeypatch.context() as patch:
        patch.setattr(gateway, "payment_intent_charge_off_session", killed)
        with pytest.raises(SystemExit):
            charge_approved()
    return ChargeIssue.objects.order_by("-pk").first()


def _other_session_can_lock(attempt_ids) -> bool:
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db["PASSWORD"],
        dbname=db["NAME"],
    ) as other:
        try:
            other.execute(
                f"SELECT id FROM {ChargeAttempt._meta.db_table} WHERE id = ANY(%s) "
                "FOR UPDATE NOWAIT",
                [list(attempt_ids)],
            )
        except psycopg.errors.LockNotAvailable:
            return False
        finally:
            other.rollback()
    return True


@pytest.mark.django_db(transaction=True)
def test_the_reconciler_asks_and_calls_the_provider_with_no_transaction_or_lock_held(
    charge_approved, monkeypatch, localstripe
):
    charged = charge_approved(crash_after_call=True, monkeypatch=monkeypatch)
    uncharged = _crashed_before_the_call(charge_approved, monkeypatch)
    unsettled = list(ChargeAttempt.objects.values_list("pk", flat=True))
    assert ChargeAttempt.objects.filter(status=Status.PENDING).count() == 2

    seen = []
    for name in ("payment_intent_find", "payment_intent_charge_off_session"):
        real = getattr(gateway, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append((_name, connection.in_atomic_block, _other_session_can_lock(unsettled)))
            return _real(*args, **kwargs)

        monkeypatch.setattr(gateway, name, spy)

    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 2

    # Both looked up; the one with no charge at the provider called again; at every call no
    # transaction was open here and another session could lock every attempt.
    assert sorted(seen) == [
        ("payment_intent_charge_off_session", False, True),
        ("payment_intent_find", False, True),
        ("payment_intent_find", False, True),
    ]
    for issue in (charged, uncharged):
        issue.refresh_from_db()
        assert issue.state == ChargeIssue.State.SUCCEEDED
        intents = [
            pi
            for pi in localstripe.list("payment_intents")
            if pi.get("customer") == issue.provider_customer_id
        ]
        assert [pi["status"] for pi in intents] == ["succeeded"]
    assert not ChargeAttempt.objects.exclude(status=Status.SUCCEEDED).exists()


@pytest.mark.django_db
def test_a_reconcile_run_stops_at_its_deadline_and_the_next_goes_on(
    charge_approved, monkeypatch, settings, localstripe
):
    for _ in range(3):
        charge_approved(crash_after_call=True, monkeypatch=monkeypatch)
    assert ChargeAttempt.objects.filter(status=Status.PENDING).count() == 3
    # A deadline already passed: each run settles the one attempt it must (always progress),
    # then takes no further one.
    settings.TASK_DEADLINE_SECONDS = 0

    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 1
    assert ChargeAttempt.objects.filter(status=Status.PENDING).count() == 2
    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 1
    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 1
    assert attempts.attempts_reconcile(older_than=timedelta(0)) == 0
    assert ChargeAttempt.objects.filter(status=Status.SUCCEEDED).count() == 3
