"""The project's URLs plus a bare template view to compare pages against."""

from django.urls import path
from django.views.generic import TemplateView

from config.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    path("bench/bare/", TemplateView.as_view(template_name="bench/bare.html"), name="bench-bare"),
    *project_urlpatterns,
]
