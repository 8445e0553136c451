"""Staff roles, declared in one place. A role is a Django group; its permissions are synced here.

- clerk:    enters charge amounts
- approver: checks and approves what a clerk entered
- admin:    configures their spaces' charge flows and recurring lines (the global beat
            schedules are for superusers only)

Later apps add their model permissions to ROLE_PERMISSIONS; sync_roles() makes the groups match.
"""

from django.apps import apps
from django.contrib.auth.models import Group, Permission

CLERK = "clerk"
APPROVER = "approver"
ADMIN = "admin"
ROLES = (CLERK, APPROVER, ADMIN)

_CARDS_READ = {
    "cards.view_customer",
    "cards.view_paymentcard",
    "cards.view_cardinvitation",
    "cards.view_cardevent",
}

_BILLING_READ = {
    "billing.view_chargeissue",
    "billing.view_refund",
    "payments.view_chargeattempt",
}

# Collections of failed charges: see the case, and act on it (next level now, cancel, new
# recipient, copy the payment link).
_COLLECTIONS = {"chargeflows.view_chargeflowcase", "chargeflows.change_chargeflowcase"}

ROLE_PERMISSIONS: dict[str, set[str]] = {
    CLERK: {
        "spaces.view_space",
        *_CARDS_READ,
        *_BILLING_READ,
        "billing.add_chargeissue",
        "billing.enter_amount",
        "cards.add_customer",
        "cards.change_customer",
        "cards.add_cardinvitation",
        *_COLLECTIONS,
    },
    APPROVER: {
        "spaces.view_space",
        *_CARDS_READ,
        *_BILLING_READ,
        "billing.approve_charge",
        *_COLLECTIONS,
    },
    ADMIN: {
        "spaces.view_space",
        *_CARDS_READ,
        *_BILLING_READ,
        "billing.view_apikey",
        "billing.add_apikey",
        "billing.change_apikey",
        "cards.add_customer",
        "cards.change_customer",
        "cards.add_cardinvitation",
        "spaces.change_space",
        "spaces.view_spacechargelimit",
        "spaces.add_spacechargelimit",
        "spaces.change_spacechargelimit",
        "spaces.delete_spacechargelimit",
        "spaces.view_spacemembership",
        # Staff second factors of their spaces' users: list them, and reset a lost one
        # (spaces.twofactor.second_factor_reset); secrets are never shown.
        "otp_totp.view_totpdevice",
        "otp_totp.delete_totpdevice",
        # No django_celery_beat permission: the schedules run for every space, so only
        # superusers see or change them (spaces/admin.py).
        # Their space's outbound events and delivery log, and "redeliver". (Provider events
        # belong to the platform account, not to a space: superusers only.)
        "payments.view_outboundevent",
        "payments.change_outboundevent",
        "payments.view_deliveryattempt",
        # Their spaces' charge flows (conditions and levels edited on the flow's page).
        *_COLLECTIONS,
        "chargeflows.view_chargeflow",
        "chargeflows.add_chargeflow",
        "chargeflows.change_chargeflow",
        "chargeflows.view_chargeflowlevelconfiguration",
        "chargeflows.add_chargeflowlevelconfiguration",
        "chargeflows.change_chargeflowlevelconfiguration",
        "chargeflows.view_chargeflowcondition",
        "chargeflows.add_chargeflowcondition",
        "chargeflows.change_chargeflowcondition",
        "chargeflows.delete_chargeflowcondition",
    },
}


def _permissions(codes: set[str]) -> list[Permission]:
    wanted = {tuple(code.split(".", 1)) for code in codes}
    found = Permission.objects.filter(
        content_type__app_label__in={app for app, _ in wanted}
    ).select_related("content_type")
    return [p for p in found if (p.content_type.app_label, p.codename) in wanted]


def sync_roles() -> None:
    """Create the role groups and give each exactly its declared permissions."""
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(_permissions(ROLE_PERMISSIONS[role]))


def sync_roles_after_migrate(sender, **kwargs):
    # post_migrate is sent once per app with models, in INSTALLED_APPS order, each time after
    # that app's permissions were created. Sync after the last one, when all of them exist.
    with_models = [config for config in apps.get_app_configs() if config.models_module]
    if sender is with_models[-1]:
        sync_roles()
