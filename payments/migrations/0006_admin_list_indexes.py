"""The admin list at scale: an index for its order or its search."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0005_refund_attempts"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="chargeattempt",
            index=models.Index(fields=["provider_customer_id"], name="attempt_provider_customer"),
        ),
    ]
