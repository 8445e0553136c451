"""cards 0004: PaymentCard.lookup_key becomes a stored column, backfilled in the format the
property computed (the external number, else our id; brand; last 4; MM/YY)."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("cards", "0003_customer_space_fixed")]


@pytest.mark.django_db(transaction=True)
def test_existing_cards_get_their_lookup_key():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    space = old.get_model("spaces", "Space").objects.create(name="Old", slug="old")
    Customer = old.get_model("cards", "Customer")
    numbered = Customer.objects.create(
        space=space, name="Seed", email="s@example.test", external_number="0283759"
    )
    plain = Customer.objects.create(space=space, name="Kim", email="k@example.test")
    PaymentCard = old.get_model("cards", "PaymentCard")
    for customer, brand, month, year in (
        (numbered, "Mastercard", 6, 2025),
        (plain, "Visa", 11, 2031),
    ):
        PaymentCard.objects.create(
            space=space,
            customer=customer,
            provider_payment_method_id=f"pm_{customer.pk}",
            brand=brand,
            last4="4242",
            exp_month=month,
            exp_year=year,
        )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from cards.models import PaymentCard as Current

    assert sorted(Current.objects.values_list("lookup_key", flat=True)) == sorted(
        ["0283759-Mastercard-4242-06/25", f"{plain.pk}-Visa-4242-11/31"]
    )
