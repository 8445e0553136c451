"""Indexes for the admin list at a million issues: its order (created_at, id) and its search
(billing.selectors.charge_issue_search): exact matches on the email (any case), reference,
provider customer id and last 4, and on PostgreSQL a trigram index for a part of the
customer's name (Django's icontains is UPPER(col) LIKE UPPER('%term%'), which a trigram GIN
index on the same expression answers). SQLite (the local run) scans instead, as before.
"""

import django.db.models.functions.text
from django.db import migrations, models

NAME_TRIGRAM = (
    "CREATE INDEX IF NOT EXISTS issue_customer_name_trgm ON billing_chargeissue "
    "USING gin (UPPER(customer_name::text) gin_trgm_ops)"
)


def add_name_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(NAME_TRIGRAM)


def drop_name_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS issue_customer_name_trgm")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0007_refunds"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="chargeissue",
            index=models.Index(fields=["created_at", "id"], name="issue_created"),
        ),
        migrations.AddIndex(
            model_name="chargeissue",
            index=models.Index(
                django.db.models.functions.text.Upper("customer_email"),
                name="issue_customer_email_upper",
            ),
        ),
        migrations.AddIndex(
            model_name="chargeissue",
            index=models.Index(fields=["external_reference"], name="issue_external_reference"),
        ),
        migrations.AddIndex(
            model_name="chargeissue",
            index=models.Index(fields=["provider_customer_id"], name="issue_provider_customer"),
        ),
        migrations.AddIndex(
            model_name="chargeissue",
            index=models.Index(fields=["card_last4"], name="issue_card_last4"),
        ),
        migrations.RunPython(add_name_trigram_index, drop_name_trigram_index, elidable=False),
    ]
