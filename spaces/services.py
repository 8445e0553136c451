from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from core.errors import DomainError

from .models import Space, SpaceEvent, SpaceMembership, webhook_secret_new
from .roles import ROLES, sync_roles
from .selectors import user_may_act_in_space


class SpaceError(DomainError):
    """A space rule was broken (see core.errors.DomainError)."""

    code = "space_error"
    message = "This space cannot be changed that way."


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


def space_webhook_secret_rotate(*, space: Space, acting_user) -> tuple[Space, str]:
    """Give the space a new webhook signing secret and return it: the caller shows it once, it
    is never displayed again. Events signed from now on use the new secret. Audited."""
    if not user_may_act_in_space(
        user=acting_user, permission="spaces.change_space", space_id=space.pk
    ):
        raise SpaceError("You are not allowed to change this space.", code="not_allowed")
    secret = webhook_secret_new()
    with transaction.atomic():
        space = Space.objects.select_for_update().get(pk=space.pk)
        space.webhook_secret = secret
        space._history_user = acting_user
        space.save(update_fields=["webhook_secret"])
        SpaceEvent.objects.create(
            space=space,
            action=SpaceEvent.Action.WEBHOOK_SECRET_ROTATED,
            actor=acting_user,
        )
    return space, secret


def space_refund_threshold_changed(*, space: Space, acting_user, before: int | None) -> None:
    """Audit a new refund threshold (up to which refunds need no approver): who set it from
    what to what. Called in the transaction that saved it (the admin's change form)."""
    SpaceEvent.objects.create(
        space=space,
        action=SpaceEvent.Action.REFUND_THRESHOLD_CHANGED,
        actor=acting_user,
        detail={
            "before": before,
            "after": space.refund_threshold_minor,
            "currency": space.default_currency,
        },
    )
