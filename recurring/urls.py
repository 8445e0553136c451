from django.urls import path

from . import api

app_name = "recurring_api"

# The parameter is `id` (a line's public UUID), the name the URL-wide tests already fill.
urlpatterns = [
    path("recurring-lines", api.recurring_line_create, name="line_create"),
    path("recurring-lines/<str:id>", api.recurring_line_detail, name="line_detail"),
    *(
        path(
            f"recurring-lines/<str:id>/{action}",
            api.recurring_line_action,
            {"action": action},
            name=f"line_{action}",
        )
        for action in ("pause", "resume", "cancel")
    ),
]
