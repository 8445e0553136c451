"""The work queue's collections (open payment links, recently failed cases) and the admin
search's email match, from indexes (bench/admin_scale.py)."""

import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chargeflows", "0009_dashboard"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="chargeflowcase",
            index=models.Index(
                django.db.models.functions.text.Upper("recipient_email"),
                name="flowcase_recipient_upper",
            ),
        ),
        migrations.AddIndex(
            model_name="chargeflowcase",
            index=models.Index(
                condition=models.Q(("state", "failed")),
                fields=["finished_at"],
                name="flowcase_failed",
            ),
        ),
        migrations.AddIndex(
            model_name="chargeflowlevelpaymentlink",
            index=models.Index(
                condition=models.Q(("retired_at__isnull", True), ("used_at__isnull", True)),
                fields=["expires_at"],
                name="link_open",
            ),
        ),
    ]
