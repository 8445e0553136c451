"""A customer's cards, invitations and registrations stay in the customer's space.

Unique (id, space) on customers is the target of composite foreign keys
(customer_id, space_id) -> customer (id, space_id); PostgreSQL then refuses any row, or any
UPDATE (a customer moved to another space, a card re-pointed), that mixes spaces. They are
checked at once (not deferred), so the statement that breaks the rule is the one that fails.
SQLite (the one-command local run) has no ALTER TABLE ... ADD CONSTRAINT: there the services'
checks stand alone.
"""

from django.db import migrations, models

SAME_SPACE = [
    # (table, constraint, columns, referenced table, referenced columns)
    (
        "cards_paymentcard",
        "paymentcard_customer_same_space",
        "customer_id, space_id",
        "cards_customer",
        "id, space_id",
    ),
    (
        "cards_cardinvitation",
        "cardinvitation_customer_same_space",
        "customer_id, space_id",
        "cards_customer",
        "id, space_id",
    ),
    (
        "cards_cardregistration",
        "cardregistration_customer_same_space",
        "customer_id, space_id",
        "cards_customer",
        "id, space_id",
    ),
]


def add_same_space_keys(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, name, columns, target, target_columns in SAME_SPACE:
        schema_editor.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({columns}) "
            f"REFERENCES {target} ({target_columns})"
        )


def drop_same_space_keys(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, name, *_ in SAME_SPACE:
        schema_editor.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("cards", "0002_cardevent_provider_kinds"),
        ("spaces", "0004_space_settings_validated"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="customer",
            constraint=models.UniqueConstraint(
                fields=("id", "space"), name="uniq_customer_id_space"
            ),
        ),
        migrations.AddConstraint(
            model_name="paymentcard",
            constraint=models.UniqueConstraint(
                fields=("id", "customer", "space"), name="uniq_paymentcard_id_customer_space"
            ),
        ),
        migrations.RunPython(add_same_space_keys, drop_same_space_keys, elidable=False),
    ]
