"""The admin list at scale: an index for its order or its search."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chargeflows", "0007_charge_flow_history"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="chargeflowcase",
            index=models.Index(fields=["created_at", "id"], name="flowcase_created"),
        ),
    ]
