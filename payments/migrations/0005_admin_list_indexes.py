"""The admin list at scale: an index for its order or its search."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0004_flow_level_owners"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="chargeattempt",
            index=models.Index(fields=["provider_customer_id"], name="attempt_provider_customer"),
        ),
    ]
