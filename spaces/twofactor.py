"""Staff second factor: who needs one, enrolment, recovery codes, verification and resets.

Built on django-otp's devices, never on crypto of our own: a TOTPDevice is the authenticator
app, a StaticDevice holds the recovery codes (each token is deleted when used). A session is
verified once `django_otp.login()` recorded the device that accepted a code;
`spaces.middleware.StaffSecondFactorMiddleware` keeps staff who passed only the password out of
every admin page.
"""

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.db import transaction
from django_otp import user_has_device
from django_otp import verify_token as otp_verify_token
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from core.errors import DomainError

from .models import SpaceMembership
from .roles import ADMIN, APPROVER
from .selectors import space_list_for_user

RECOVERY_CODE_COUNT = 10
AUTHENTICATOR_NAME = "Authenticator app"
RECOVERY_CODES_NAME = "Recovery codes"
# Admins (role) get this django-otp permission in roles.py; superusers have every permission.
RESET_PERMISSION = "otp_totp.delete_totpdevice"


class TwoFactorError(DomainError):
    """A refused second-factor step: `code` for logs, `message` safe to show the user."""

    def __init__(self, code: str, message: str):
        super().__init__(message, code=code)


def second_factor_required(user) -> bool:
    """Approvers, admins and superusers must have a second factor when STAFF_2FA_REQUIRED is
    on. Clerks never must (they may enrol, and are then asked for it like anyone else)."""
    if not settings.STAFF_2FA_REQUIRED or not user.is_authenticated:
        return False
    return user.is_superuser or user.groups.filter(name__in=(APPROVER, ADMIN)).exists()


def second_factor_enrolled(user) -> bool:
    """The user has a confirmed device, so every login must be completed with a code."""
    return user_has_device(user, confirmed=True)


@transaction.atomic
def totp_device_start(*, user) -> TOTPDevice:
    """The user's pending (unconfirmed) authenticator, created with a fresh secret if there is
    none. Refused once a device is confirmed: replacing it takes a reset by an admin, so a
    stolen password alone can never swap the victim's authenticator."""
    if second_factor_enrolled(user):
        raise TwoFactorError(
            "already_enrolled",
            "You already have a second factor. Ask an admin to reset it if you lost it.",
        )
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=AUTHENTICATOR_NAME, confirmed=False)
    return device


def totp_device_confirm(*, user, device_id: int, token: str) -> tuple[TOTPDevice, list[str]]:
    """Confirm the pending authenticator with a code it shows, and issue fresh recovery codes.

    Returns the device and the codes in clear: the caller shows them once. A wrong code
    changes nothing but django-otp's throttle counter (committed, so it is not undone).
    """
    device = TOTPDevice.objects.filter(user=user, pk=device_id, confirmed=False).first()
    if device is None:
        raise TwoFactorError(
            "no_pending_device", "This set-up has expired or was finished. Start again."
        )
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().get(pk=device.pk)
        verified = device.verify_token(_normalise(token))
    if not verified:
        raise TwoFactorError(
            "invalid_token",
            "That code is not valid. Enter the 6-digit code your app shows now.",
        )
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        codes = _recovery_codes_replace(user=user)
        _admin_log(
            acting_user=user,
            user=user,
            message="Enrolled a second factor (authenticator app and recovery codes).",
        )
    return device, codes


def _recovery_codes_replace(*, user) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=RECOVERY_CODES_NAME, confirmed=True)
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def second_factor_verify(*, user, token: str) -> Device:
    """The confirmed device that accepts the code: six digits are checked against the
    authenticator, anything else against the recovery codes (each works once).

    Every wrong code counts in django-otp's throttle (a doubling wait) before another try.
    """
    token = _normalise(token)
    model = TOTPDevice if token.isdigit() and len(token) == 6 else StaticDevice
    devices = list(model.objects.devices_for_user(user, confirmed=True))
    for device in devices:
        allowed, _ = device.verify_is_allowed()
        if not allowed:
            raise TwoFactorError(
                "throttled", "Too many wrong codes. Wait a minute, then try again."
            )
        # django-otp's verify_token locks the device row and commits its throttle counter.
        verified = otp_verify_token(user, device.persistent_id, token)
        if verified is not None:
            return verified
    raise TwoFactorError("invalid_token", "That code is not valid.")


@transaction.atomic
def second_factor_reset(*, user, acting_user) -> int:
    """Remove a staff user's authenticator and recovery codes, so they enrol again at their
    next login, and write it to the admin log.

    Allowed to superusers, and to admins for a user who shares one of their spaces; never for
    oneself (another admin must do it) and never a superuser's by a non-superuser. Returns how
    many devices were removed.
    """
    if user.pk == acting_user.pk:
        raise TwoFactorError("own_device", "Another admin must reset your own second factor.")
    if not acting_user.has_perm(RESET_PERMISSION):
        raise TwoFactorError("not_allowed", "You may not reset second factors.")
    if not acting_user.is_superuser:
        shares_space = SpaceMembership.objects.filter(
            user=user, space__in=space_list_for_user(user=acting_user)
        ).exists()
        if user.is_superuser or not shares_space:
            raise TwoFactorError(
                "not_allowed", f"You may not reset the second factor of {user.get_username()}."
            )
    removed = 0
    for model in (TOTPDevice, StaticDevice):
        _, per_model = model.objects.filter(user=user).delete()
        removed += per_model.get(model._meta.label, 0)
    _admin_log(
        acting_user=acting_user,
        user=user,
        message="Reset the second factor (authenticator app and recovery codes removed).",
    )
    return removed


def _admin_log(*, acting_user, user, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=acting_user.pk,
        queryset=get_user_model().objects.filter(pk=user.pk),
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )


def _normalise(token: str) -> str:
    # People type codes with spaces or dashes ("123 456", "abcd-efgh") and in capitals.
    return "".join(ch for ch in token if ch not in " -\t").lower()
