from django.urls import path

from . import views

app_name = "chargeflows"

urlpatterns = [
    path("<str:token>/", views.pay, name="pay"),
    path("<str:token>/setup-intent/", views.setup_intent, name="setup_intent"),
    path("<str:token>/sepa-setup-intent/", views.sepa_setup_intent, name="sepa_setup_intent"),
]
