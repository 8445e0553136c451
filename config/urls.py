from django.contrib import admin
from django.urls import include, path

from .views import healthz

admin.site.site_header = "Charging back office"
admin.site.site_title = "Charging back office"
admin.site.index_title = "Back office"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("register/", include("cards.urls")),
    path("api/v1/", include("billing.urls")),
    path("webhooks/", include("payments.urls")),
]
