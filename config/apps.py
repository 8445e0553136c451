from django.contrib.admin.apps import AdminConfig


class BackOfficeAdminConfig(AdminConfig):
    """django.contrib.admin with the project's site as `admin.site` (see config/admin_site.py).

    Installed instead of "django.contrib.admin", and unfold as "unfold.apps.BasicAppConfig",
    whose ready() does not replace `admin.site` with a plain UnfoldAdminSite."""

    default_site = "config.admin_site.BackOfficeAdminSite"
