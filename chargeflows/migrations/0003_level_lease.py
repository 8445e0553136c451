"""The level's lease gets a column of its own (claimed_until), so the runner's claim is a HOT
update; the table keeps free space on each page for those updates (fillfactor, PostgreSQL)."""

import django.db.models.deletion
from django.db import migrations, models

FILLFACTOR = 80


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"ALTER TABLE chargeflows_chargeflowlevel SET (fillfactor = {FILLFACTOR})"
        )


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE chargeflows_chargeflowlevel RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("chargeflows", "0002_default_flows"),
    ]

    operations = [
        migrations.AddField(
            model_name="chargeflowlevel",
            name="claimed_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="chargeflowlevel",
            name="case",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="levels",
                to="chargeflows.chargeflowcase",
            ),
        ),
        migrations.RunPython(set_fillfactor, reset_fillfactor),
    ]
