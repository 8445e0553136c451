"""Space settings validated: currencies we charge in, positive maximums (also per currency),
a generated webhook secret for every space (existing empty ones are filled here), and the
audit trail of secret rotations."""

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import spaces.models


def fill_settings(apps, schema_editor):
    """A space with an empty webhook secret gets one (shown to nobody: staff rotate it to see
    a secret), and a maximum that is not positive becomes the default."""
    Space = apps.get_model("spaces", "Space")
    for space in Space.objects.filter(webhook_secret=""):
        space.webhook_secret = spaces.models.webhook_secret_new()
        space.save(update_fields=["webhook_secret"])
    Space.objects.filter(max_charge_minor__lte=0).update(max_charge_minor=1_000_000)


class Migration(migrations.Migration):
    dependencies = [
        ("spaces", "0003_space_max_charge_minor_space_webhook_secret_and_more"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="SpaceChargeLimit",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "currency",
                    models.CharField(
                        choices=[
                            ("AUD", "AUD"),
                            ("BHD", "BHD"),
                            ("CAD", "CAD"),
                            ("CHF", "CHF"),
                            ("CZK", "CZK"),
                            ("DKK", "DKK"),
                            ("EUR", "EUR"),
                            ("GBP", "GBP"),
                            ("HKD", "HKD"),
                            ("JOD", "JOD"),
                            ("JPY", "JPY"),
                            ("KRW", "KRW"),
                            ("KWD", "KWD"),
                            ("NOK", "NOK"),
                            ("NZD", "NZD"),
                            ("OMR", "OMR"),
                            ("PLN", "PLN"),
                            ("SEK", "SEK"),
                            ("SGD", "SGD"),
                            ("USD", "USD"),
                        ],
                        max_length=3,
                    ),
                ),
                (
                    "max_charge_minor",
                    models.BigIntegerField(
                        help_text="E.g. 1000000 = 10,000.00 EUR, or 1,000,000 JPY.",
                        validators=[django.core.validators.MinValueValidator(1)],
                        verbose_name="maximum charge (minor units)",
                    ),
                ),
            ],
            options={
                "verbose_name": "maximum charge per currency",
                "verbose_name_plural": "maximum charges per currency",
                "ordering": ["currency"],
            },
        ),
        migrations.CreateModel(
            name="SpaceEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "action",
                    models.CharField(
                        choices=[("webhook_secret_rotated", "Webhook secret rotated")],
                        max_length=40,
                    ),
                ),
                ("detail", models.JSONField(blank=True, default=dict)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "ordering": ["-created_at", "-pk"],
            },
        ),
        migrations.AlterField(
            model_name="space",
            name="default_currency",
            field=models.CharField(
                choices=[
                    ("AUD", "AUD"),
                    ("BHD", "BHD"),
                    ("CAD", "CAD"),
                    ("CHF", "CHF"),
                    ("CZK", "CZK"),
                    ("DKK", "DKK"),
                    ("EUR", "EUR"),
                    ("GBP", "GBP"),
                    ("HKD", "HKD"),
                    ("JOD", "JOD"),
                    ("JPY", "JPY"),
                    ("KRW", "KRW"),
                    ("KWD", "KWD"),
                    ("NOK", "NOK"),
                    ("NZD", "NZD"),
                    ("OMR", "OMR"),
                    ("PLN", "PLN"),
                    ("SEK", "SEK"),
                    ("SGD", "SGD"),
                    ("USD", "USD"),
                ],
                default="EUR",
                help_text="ISO 4217 code used when none is given.",
                max_length=3,
            ),
        ),
        migrations.AlterField(
            model_name="space",
            name="max_charge_minor",
            field=models.BigIntegerField(
                default=1000000,
                help_text="Largest amount one charge may have, in minor units of the charged currency (1000000 = 10,000.00 EUR, or 1,000,000 JPY), for every currency without its own maximum below.",
                validators=[django.core.validators.MinValueValidator(1)],
                verbose_name="maximum charge (minor units)",
            ),
        ),
        migrations.AlterField(
            model_name="space",
            name="webhook_secret",
            field=models.CharField(
                default=spaces.models.webhook_secret_new,
                editable=False,
                help_text="Shared secret for the webhook signature (HMAC-SHA256).",
                max_length=64,
            ),
        ),
        migrations.AlterField(
            model_name="space",
            name="webhook_url",
            field=models.URLField(
                blank=True,
                help_text="Receives signed JSON events when a charging issue succeeds or fails. https only; it must be reachable on the public internet.",
                validators=[spaces.models.validate_webhook_url],
            ),
        ),
        migrations.RunPython(fill_settings, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="space",
            constraint=models.CheckConstraint(
                condition=models.Q(("max_charge_minor__gt", 0)), name="space_max_charge_positive"
            ),
        ),
        migrations.AddConstraint(
            model_name="space",
            constraint=models.CheckConstraint(
                condition=models.Q(("webhook_secret", ""), _negated=True),
                name="space_webhook_secret_set",
            ),
        ),
        migrations.AddField(
            model_name="spacechargelimit",
            name="space",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="charge_limits",
                to="spaces.space",
            ),
        ),
        migrations.AddField(
            model_name="spaceevent",
            name="actor",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="spaceevent",
            name="space",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="events",
                to="spaces.space",
            ),
        ),
        migrations.AddConstraint(
            model_name="spacechargelimit",
            constraint=models.UniqueConstraint(
                fields=("space", "currency"), name="uniq_space_charge_limit"
            ),
        ),
        migrations.AddConstraint(
            model_name="spacechargelimit",
            constraint=models.CheckConstraint(
                condition=models.Q(("max_charge_minor__gt", 0)), name="space_charge_limit_positive"
            ),
        ),
    ]
