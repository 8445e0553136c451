from django.urls import path

from . import api

app_name = "billing_api"

urlpatterns = [
    path("charge-issues", api.charge_issue_create, name="charge_issue_create"),
]
