"""Staff second factor pages (enrol, recovery codes, verify) and the login lockout page.

Thin views in the admin's look: the rules and writes are in spaces/twofactor.py. They live
under /admin/two-factor/ but outside the admin site's namespace, so that
StaffSecondFactorMiddleware lets a user who passed only the password reach them.
"""

from base64 import b32encode
from datetime import timedelta
from urllib.parse import urlencode

import django_otp
import qrcode
import qrcode.image.svg
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django_otp.plugins.otp_static.models import StaticDevice

from .twofactor import (
    TwoFactorError,
    second_factor_enrolled,
    second_factor_required,
    second_factor_verify,
    totp_device_confirm,
    totp_device_start,
)

_CODES_SESSION_KEY = "twofactor_recovery_codes"
_NEXT_SESSION_KEY = "twofactor_next"


class TokenForm(forms.Form):
    token = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autofocus": True, "inputmode": "text"}
        ),
    )


def _staff_only(view):
    """Staff who passed the password (verified or not); anyone else goes to the login page."""

    def wrapped(request, *args, **kwargs):
        if not (request.user.is_authenticated and request.user.is_active):
            return redirect(_with_next("admin:login", request.get_full_path()))
        if not request.user.is_staff:
            return redirect("admin:login")
        return view(request, *args, **kwargs)

    return never_cache(wrapped)


def _next_url(request, default: str = "") -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or default
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("admin:index")


def _render(request, template: str, context: dict, status: int = 200) -> HttpResponse:
    # Rendered now, not a TemplateResponse: the lockout page is returned by axes' middleware,
    # after the point where Django renders template responses.
    return render(request, template, {**admin.site.each_context(request), **context}, status=status)


def _with_next(url_name: str, next_url: str) -> str:
    return f"{reverse(url_name)}?{urlencode({'next': next_url})}"


def _qr_svg(uri: str) -> str:
    # An SVG drawn here from our own otpauth:// URI: no image library, no third-party host.
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return mark_safe(image.to_string(encoding="unicode"))  # noqa: S308 - our own markup


@_staff_only
def enrol(request):
    """Set up an authenticator app: scan (or type) the secret, confirm with a code."""
    user = request.user
    next_url = _next_url(request)
    if second_factor_enrolled(user):
        if user.is_verified():
            messages.info(request, "Your second factor is already set up.")
            return redirect(next_url)
        return redirect(_with_next("twofactor:verify", next_url))
    device = totp_device_start(user=user)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            device, codes = totp_device_confirm(
                user=user, device_id=device.pk, token=form.cleaned_data["token"]
            )
        except TwoFactorError as error:
            form.add_error("token", error.message)
        else:
            # A new privilege level gets a new session id (no fixation across the step).
            request.session.cycle_key()
            django_otp.login(request, device)
            request.session[_CODES_SESSION_KEY] = codes
            request.session[_NEXT_SESSION_KEY] = next_url
            return redirect("twofactor:recovery_codes")
    return _render(
        request,
        "admin/twofactor/enrol.html",
        {
            "title": "Set up two-factor authentication",
            "form": form,
            "next": next_url,
            "required": second_factor_required(user),
            "secret": b32encode(device.bin_key).decode(),
            "otpauth_uri": device.config_url,
            "qr_svg": _qr_svg(device.config_url),
        },
    )


@_staff_only
def recovery_codes(request):
    """The recovery codes, shown exactly once, right after enrolment."""
    codes = request.session.pop(_CODES_SESSION_KEY, None)
    next_url = request.session.pop(_NEXT_SESSION_KEY, None) or reverse("admin:index")
    if not codes:
        messages.info(request, "Recovery codes are shown only once, right after set-up.")
        return redirect(next_url)
    return _render(
        request,
        "admin/twofactor/recovery_codes.html",
        {"title": "Your recovery codes", "codes": codes, "next": next_url},
    )


@_staff_only
def verify(request):
    """Second step of the login: a code from the authenticator app or a recovery code."""
    user = request.user
    next_url = _next_url(request)
    if user.is_verified():
        return redirect(next_url)
    if not second_factor_enrolled(user):
        if second_factor_required(user):
            return redirect(_with_next("twofactor:enrol", next_url))
        return redirect(next_url)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            device = second_factor_verify(user=user, token=form.cleaned_data["token"])
        except TwoFactorError as error:
            form.add_error("token", error.message)
        else:
            request.session.cycle_key()
            django_otp.login(request, device)
            if isinstance(device, StaticDevice):
                left = device.token_set.count()
                messages.warning(
                    request,
                    f"You used a recovery code; {left} left. If you lost your authenticator, "
                    "ask an admin to reset your second factor and set it up again.",
                )
            return redirect(next_url)
    return _render(
        request,
        "admin/twofactor/verify.html",
        {"title": "Two-factor authentication", "form": form, "next": next_url, "narrow": True},
    )


def lockout(request, original_response=None, credentials=None):
    """django-axes' lockout response (AXES_LOCKOUT_CALLABLE): an admin-styled 429 that says
    when to try again. Each try while locked restarts the cool-off (axes' default), so the
    time is counted from now."""
    cool_off: timedelta = settings.AXES_COOLOFF_TIME
    response = _render(
        request,
        "admin/twofactor/lockout.html",
        {
            "title": "Too many failed logins",
            "narrow": True,
            "retry_at": timezone.now() + cool_off,
            "cool_off_minutes": int(cool_off.total_seconds() // 60),
            "failure_limit": settings.AXES_FAILURE_LIMIT,
        },
        status=429,
    )
    response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response
