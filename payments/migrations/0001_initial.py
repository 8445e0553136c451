"""ChargeAttempt as it was in billing, now in payments' state; the table was renamed by
billing.0002, so nothing happens in the database here."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [("billing", "0002_chargeattempt_moves_to_payments")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="ChargeAttempt",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("idempotency_key", models.CharField(max_length=100, unique=True)),
                        ("amount_minor", models.BigIntegerField()),
                        ("currency", models.CharField(max_length=3)),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("pending", "Pending (outcome not yet recorded)"),
                                    ("succeeded", "Succeeded"),
                                    ("failed", "Failed"),
                                ],
                                default="pending",
                                max_length=12,
                            ),
                        ),
                        (
                            "provider_payment_intent_id",
                            models.CharField(blank=True, max_length=255),
                        ),
                        ("failure_code", models.CharField(blank=True, max_length=60)),
                        ("decline_code", models.CharField(blank=True, max_length=60)),
                        ("failure_message", models.CharField(blank=True, max_length=300)),
                        ("hard_decline", models.BooleanField(default=False)),
                        ("last_error", models.CharField(blank=True, max_length=200)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "issue",
                            models.OneToOneField(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="attempt",
                                to="billing.chargeissue",
                            ),
                        ),
                    ],
                    options={
                        "indexes": [
                            models.Index(
                                condition=models.Q(("status", "pending")),
                                fields=["created_at"],
                                name="attempt_pending",
                            )
                        ],
                    },
                ),
            ],
        )
    ]
