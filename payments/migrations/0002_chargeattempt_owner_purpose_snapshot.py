"""The attempt gets a purpose, an explicit owner (exactly one set), a snapshot of what is
charged and the statuses of asynchronous methods. Existing rows (all issue charges) are filled
from their issue."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_from_issue(apps, schema_editor):
    ChargeAttempt = apps.get_model("payments", "ChargeAttempt")
    ChargeIssue = apps.get_model("billing", "ChargeIssue")
    issue = ChargeIssue.objects.filter(pk=OuterRef("charge_issue_id"))
    ChargeAttempt.objects.update(
        purpose="issue_charge",
        space_id=Subquery(issue.values("space_id")[:1]),
        provider_customer_id=Subquery(issue.values("provider_customer_id")[:1]),
        provider_payment_method_id=Subquery(issue.values("card__provider_payment_method_id")[:1]),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0001_initial"),
        ("billing", "0002_chargeattempt_moves_to_payments"),
        ("spaces", "0003_space_max_charge_minor_space_webhook_secret_and_more"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="chargeattempt", name="attempt_pending"),
        migrations.RenameField(
            model_name="chargeattempt", old_name="issue", new_name="charge_issue"
        ),
        migrations.AlterField(
            model_name="chargeattempt",
            name="charge_issue",
            field=models.OneToOneField(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="attempt",
                to="billing.chargeissue",
            ),
        ),
        migrations.AddField(
            model_name="chargeattempt",
            name="purpose",
            field=models.CharField(
                choices=[
                    ("issue_charge", "Charging issue"),
                    ("flow_level", "Charge-flow level"),
                    ("payment_link", "Payment link"),
                    ("recurring_generation", "Recurring generation"),
                    ("refund", "Refund"),
                ],
                default="issue_charge",
                max_length=30,
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="chargeattempt",
            name="space",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="charge_attempts",
                to="spaces.space",
            ),
        ),
        migrations.AddField(
            model_name="chargeattempt",
            name="provider_customer_id",
            field=models.CharField(default="", max_length=255),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="chargeattempt",
            name="provider_payment_method_id",
            field=models.CharField(default="", max_length=255),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="chargeattempt",
            name="provider_charge_id",
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.RunPython(fill_from_issue, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="chargeattempt",
            name="space",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="charge_attempts",
                to="spaces.space",
            ),
        ),
        migrations.AlterField(
            model_name="chargeattempt",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending (the provider is being called)"),
                    ("processing", "Processing at the provider (settled later)"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("unknown", "Outcome unknown (to be reconciled)"),
                ],
                default="pending",
                max_length=12,
            ),
        ),
        migrations.AlterField(
            model_name="chargeattempt",
            name="provider_payment_intent_id",
            field=models.CharField(blank=True, db_index=True, max_length=255),
        ),
        migrations.AddIndex(
            model_name="chargeattempt",
            index=models.Index(
                condition=models.Q(("status__in", ["pending", "processing", "unknown"])),
                fields=["created_at"],
                name="attempt_unsettled",
            ),
        ),
        migrations.AddConstraint(
            model_name="chargeattempt",
            constraint=models.CheckConstraint(
                condition=models.Q(("charge_issue__isnull", False)), name="attempt_one_owner"
            ),
        ),
        migrations.AddConstraint(
            model_name="chargeattempt",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount_minor__gt", 0)), name="attempt_amount_positive"
            ),
        ),
    ]
