"""API key audit trail; and a charging issue's customer and card stay in the issue's space.

Composite foreign keys on PostgreSQL (see cards/migrations/0002): the issue's
(customer_id, space_id) must be a customer of that space, and its (card_id, customer_id,
space_id) a card of that customer in that space. Checked at once, not deferred. Skipped on
SQLite (the local run), where the services' checks stand alone.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

SAME_SPACE = [
    # (table, constraint, columns, referenced table, referenced columns)
    (
        "billing_chargeissue",
        "chargeissue_customer_same_space",
        "customer_id, space_id",
        "cards_customer",
        "id, space_id",
    ),
    (
        "billing_chargeissue",
        "chargeissue_card_same_customer_space",
        "card_id, customer_id, space_id",
        "cards_paymentcard",
        "id, customer_id, space_id",
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
        ("billing", "0002_chargeattempt_moves_to_payments"),
        ("cards", "0003_customer_space_fixed"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiKeyEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "action",
                    models.CharField(
                        choices=[("created", "Created"), ("revoked", "Revoked")], max_length=20
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "actor",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "api_key",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="events",
                        to="billing.apikey",
                    ),
                ),
            ],
            options={
                "verbose_name": "API key event",
                "ordering": ["created_at", "pk"],
            },
        ),
        migrations.RunPython(add_same_space_keys, drop_same_space_keys, elidable=False),
    ]
