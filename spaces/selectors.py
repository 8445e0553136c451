from django.db.models import QuerySet

from .models import Space


def space_list_for_user(*, user) -> QuerySet[Space]:
    """The spaces a staff user may see: all for a superuser, their memberships otherwise."""
    if not user.is_active or not user.is_staff:
        return Space.objects.none()
    if user.is_superuser:
        return Space.objects.all()
    return Space.objects.filter(memberships__user=user)


def user_works_in_space(*, user, space_id: int) -> bool:
    """The space is one of the user's (or the user is a superuser). Outside their spaces a
    row does not exist for a user: services answer "not found" and write nothing there."""
    return user is not None and space_list_for_user(user=user).filter(pk=space_id).exists()


def user_may_act_in_space(*, user, permission: str, space_id: int) -> bool:
    """The rule every service applies before a staff write: the role's permission, in one of
    the user's own spaces."""
    return (
        user is not None
        and user.has_perm(permission)
        and space_list_for_user(user=user).filter(pk=space_id).exists()
    )
