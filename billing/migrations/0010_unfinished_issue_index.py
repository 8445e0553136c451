"""Unfinished issues: the work queues' counts and the dashboard's open charges."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_issue_open_reference_unique"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="chargeissue",
            index=models.Index(
                condition=models.Q(
                    ("state__in", ["succeeded", "failed", "cancelled"]), _negated=True
                ),
                fields=["space", "state", "entered_by"],
                name="issue_unfinished",
            ),
        ),
    ]
