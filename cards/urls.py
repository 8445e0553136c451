from django.urls import path

from . import views

app_name = "cards"

urlpatterns = [
    path("done/<uuid:registration_ref>/", views.done, name="done"),
    path("invite/<str:invitation_ref>/<str:token>/", views.invitation, name="invitation"),
    path(
        "invite/<str:invitation_ref>/<str:token>/setup-intent/",
        views.invitation_setup_intent,
        name="invitation_setup_intent",
    ),
    path(
        "invite/<str:invitation_ref>/<str:token>/sepa/setup-intent/",
        views.invitation_sepa_setup_intent,
        name="invitation_sepa_setup_intent",
    ),
    path(
        "invite/<str:invitation_ref>/<str:token>/sepa/",
        views.invitation_sepa_debit,
        name="invitation_sepa_debit",
    ),
    path("<slug:space_slug>/", views.register, name="register"),
    path("<slug:space_slug>/setup-intent/", views.setup_intent, name="setup_intent"),
]
