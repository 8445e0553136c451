from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from .models import Space, SpaceMembership
from .roles import ROLES, sync_roles


class SpaceError(Exception):
    code = "space_error"


def space_get_or_create(*, slug: str, name: str, default_currency: str = "EUR") -> Space:
    space, _ = Space.objects.get_or_create(
        slug=slug, defaults={"name": name, "default_currency": default_currency}
    )
    return space


@transaction.atomic
def staff_user_ensure(*, username: str, password: str, role: str, spaces: list[Space], email=""):
    """Create (or update) a staff user with one role and membership in the given spaces."""
    if role not in ROLES:
        raise SpaceError(f"Unknown role {role!r}; expected one of {', '.join(ROLES)}.")
    sync_roles()
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username, defaults={"email": email})
    user.is_staff = True
    user.is_active = True
    user.set_password(password)
    user.save()
    user.groups.set([Group.objects.get(name=role)])
    for space in spaces:
        SpaceMembership.objects.get_or_create(space=space, user=user)
    return user
