import pytest
from django.contrib.auth.models import Group

from spaces.roles import ROLE_PERMISSIONS, ROLES, sync_roles

pytestmark = pytest.mark.django_db


def _codes(group: Group) -> set[str]:
    return {
        f"{app}.{codename}"
        for app, codename in group.permissions.values_list("content_type__app_label", "codename")
    }


def test_migrate_creates_each_role_with_exactly_its_declared_permissions():
    for role in ROLES:
        assert _codes(Group.objects.get(name=role)) == ROLE_PERMISSIONS[role]


def test_sync_roles_removes_permissions_given_by_hand():
    clerk = Group.objects.get(name="clerk")
    clerk.permissions.add(*Group.objects.get(name="admin").permissions.all())

    sync_roles()

    assert _codes(clerk) == ROLE_PERMISSIONS["clerk"]
