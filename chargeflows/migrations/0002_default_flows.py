"""Every existing space gets the default flow (new spaces get it from a post_save receiver)."""

from django.db import migrations


def create_default_flows(apps, schema_editor):
    from chargeflows import defaults

    Space = apps.get_model("spaces", "Space")
    ChargeFlow = apps.get_model("chargeflows", "ChargeFlow")
    Level = apps.get_model("chargeflows", "ChargeFlowLevelConfiguration")
    for space in Space.objects.exclude(charge_flows__isnull=False):
        flow = ChargeFlow.objects.create(
            space=space,
            name=defaults.DEFAULT_FLOW_NAME,
            priority=defaults.DEFAULT_FLOW_PRIORITY,
            state="active",
            is_default=True,
        )
        for level in defaults.DEFAULT_LEVELS:
            Level.objects.create(flow=flow, **level)


class Migration(migrations.Migration):
    dependencies = [("chargeflows", "0001_initial")]

    operations = [migrations.RunPython(create_default_flows, migrations.RunPython.noop)]
