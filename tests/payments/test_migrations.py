"""ChargeAttempt moved from billing to payments: rows written before the move survive it."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [
    ("billing", "0001_initial"),
    ("cards", "0001_initial"),
    ("spaces", "0003_space_max_charge_minor_space_webhook_secret_and_more"),
]


@pytest.mark.django_db(transaction=True)
def test_attempts_written_before_the_move_keep_their_rows_and_get_their_snapshot():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    space = old.get_model("spaces", "Space").objects.create(name="Old", slug="old")
    customer = old.get_model("cards", "Customer").objects.create(
        space=space, name="Kim", email="kim@example.test", provider_customer_id="cus_old"
    )
    card = old.get_model("cards", "PaymentCard").objects.create(
        space=space,
        customer=customer,
        provider_payment_method_id="pm_old",
        brand="Visa",
        last4="4242",
        exp_month=6,
        exp_year=2034,
    )
    issue = old.get_model("billing", "ChargeIssue").objects.create(
        space=space,
        customer=customer,
        card=card,
        source="staff",
        customer_name="Kim",
        customer_email="kim@example.test",
        provider_customer_id="cus_old",
        card_last4="4242",
        amount_minor=1234,
        currency="EUR",
        state="succeeded",
    )
    old.get_model("billing", "ChargeAttempt").objects.create(
        issue=issue,
        idempotency_key=f"charge-issue-{issue.pk}",
        amount_minor=1234,
        currency="EUR",
        status="succeeded",
        provider_payment_intent_id="pi_old",
    )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from payments.models import ChargeAttempt

    (attempt,) = ChargeAttempt.objects.all()
    assert attempt.charge_issue_id == issue.pk
    assert attempt.purpose == ChargeAttempt.Purpose.ISSUE_CHARGE
    assert (attempt.space_id, attempt.provider_customer_id, attempt.provider_payment_method_id) == (
        space.pk,
        "cus_old",
        "pm_old",
    )
    assert (attempt.status, attempt.provider_payment_intent_id) == ("succeeded", "pi_old")
    assert attempt.idempotency_key == f"charge-issue-{issue.pk}"
    # New attempts get ids after the old ones (the identity sequence moved with the table).
    assert ChargeAttempt._meta.db_table == "payments_chargeattempt"
