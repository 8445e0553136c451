from urllib.parse import urlencode

from django.shortcuts import redirect

from .twofactor import second_factor_enrolled, second_factor_required

# Admin pages a user who passed only the password may still open: leaving, or logging in as
# someone else. Everything else of the admin site waits for the second factor.
_OPEN_ADMIN_VIEWS = {"login", "logout", "jsi18n"}


class StaffSecondFactorMiddleware:
    """Keeps staff who passed only the password out of every admin page.

    Like django-otp's OTPAdminSite, but without replacing `admin.site`: a session not verified
    by django-otp goes to the verify page when the user has a confirmed device, and to
    enrolment when the user must have one (spaces.twofactor.second_factor_required). Needs
    django-otp's OTPMiddleware before it.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if match is None or "admin" not in match.namespaces:
            return None
        if match.url_name in _OPEN_ADMIN_VIEWS:
            return None
        user = request.user
        if not user.is_authenticated or user.is_verified():
            return None
        if second_factor_enrolled(user):
            target = "twofactor:verify"
        elif second_factor_required(user):
            target = "twofactor:enrol"
        else:
            return None
        response = redirect(target)
        response["Location"] += "?" + urlencode({"next": request.get_full_path()})
        return response
