"""The dashboard's amounts per day, read from an index of succeeded attempts alone."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0006_admin_list_indexes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="chargeattempt",
            index=models.Index(
                condition=models.Q(("status", "succeeded")),
                fields=["space", "finished_at"],
                include=("purpose", "currency", "amount_minor", "id"),
                name="attempt_succeeded_by_day",
            ),
        ),
    ]
