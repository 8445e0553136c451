"""Second-factor pages, mounted at /admin/two-factor/ by config/urls.py."""

from django.urls import path

from . import otp_views

app_name = "twofactor"

urlpatterns = [
    path("enrol/", otp_views.enrol, name="enrol"),
    path("recovery-codes/", otp_views.recovery_codes, name="recovery_codes"),
    path("verify/", otp_views.verify, name="verify"),
]
