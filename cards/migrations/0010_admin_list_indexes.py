"""Indexes for the admin lists of customers and cards at scale: their orders, and the search
(cards.selectors): email (any case), customer number, last 4, and on PostgreSQL a trigram
index for a part of the name (see billing/migrations/0006).
"""

import django.db.models.functions.text
from django.db import migrations, models


def add_name_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS customer_name_trgm ON cards_customer "
        "USING gin (UPPER(name::text) gin_trgm_ops)"
    )


def drop_name_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS customer_name_trgm")


class Migration(migrations.Migration):
    dependencies = [
        ("cards", "0009_customer_history_card_expiry_warning"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="customer",
            index=models.Index(fields=["name", "id"], name="customer_name_order"),
        ),
        migrations.AddIndex(
            model_name="customer",
            index=models.Index(
                django.db.models.functions.text.Upper("email"), name="customer_email_upper"
            ),
        ),
        migrations.AddIndex(
            model_name="customer",
            index=models.Index(fields=["external_number"], name="customer_external_number"),
        ),
        migrations.AddIndex(
            model_name="paymentcard",
            index=models.Index(fields=["created_at", "id"], name="paymentcard_created"),
        ),
        migrations.AddIndex(
            model_name="paymentcard",
            index=models.Index(fields=["last4"], name="paymentcard_last4"),
        ),
        migrations.RunPython(add_name_trigram_index, drop_name_trigram_index, elidable=False),
    ]
