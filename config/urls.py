from django.contrib import admin
from django.urls import include, path

from spaces.forms import StaffLoginForm

from .api import API_V1_INCLUDES
from .views import HostedJavaScriptCatalog, healthz_live, healthz_provider, healthz_ready

admin.site.site_header = "Charging back office"
admin.site.site_title = "Charging back office"
admin.site.index_title = "Back office"
admin.site.login_form = StaffLoginForm

# Styled pages, JSON under /api/, hosted headers under /register/ (see config/views.py).
handler400 = "config.views.bad_request"
handler403 = "config.views.permission_denied"
handler404 = "config.views.page_not_found"
handler500 = "config.views.server_error"

urlpatterns = [
    # Load balancers: /healthz/live (the process answers), /healthz/ready (the database and the
    # broker do); /healthz is readiness, as it was before the split. Monitoring:
    # /healthz/provider (the payment provider does; cached for a few seconds).
    path("healthz", healthz_ready, name="healthz"),
    path("healthz/live", healthz_live, name="healthz-live"),
    path("healthz/ready", healthz_ready, name="healthz-ready"),
    path("healthz/provider", healthz_provider, name="healthz-provider"),
    # Before the admin site, whose catch-all would otherwise answer these paths.
    path("admin/two-factor/", include("spaces.otp_urls")),
    path("admin/", admin.site.urls),
    path("register/", include("cards.urls")),
    path("pay/", include("chargeflows.urls")),
    # The API for other systems (config/api.py): operations, /api/v1/openapi.json, /api/v1/docs.
    *(path("api/v1/", api_include) for api_include in API_V1_INCLUDES),
    path("webhooks/", include("payments.urls")),
    # The hosted pages' scripts' sentences in the page's language (Django's own catalogue view).
    path("jsi18n/<str:language>/", HostedJavaScriptCatalog.as_view(), name="javascript-catalog"),
]
