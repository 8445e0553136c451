"""The admin site: unfold's, with two rules every admin registered on it follows, ours and
the libraries' alike (users, second factors, login lockout, beat schedules).

1. A list answers only the lookups its admin declares (list filters, search, date
   hierarchy); any other query-string lookup is a 400 before a row is read. Django alone
   accepts any lookup on a model's own fields, so `?webhook_secret__startswith=ab` told a
   clerk, one character at a time, the space's webhook signing secret. register() puts
   core.admin.DeclaredLookupsAdminMixin in front of every admin class, so a new admin
   cannot forget it.
2. A secret (SECRET_FIELDS) is never shown, filtered, searched or sorted on: the site's
   system check refuses an admin that names one, directly or through a relation, in any
   of the options that would (`manage.py check`, and so every deployment, fails).

`admin.site` is an instance of this class (config/apps.py, INSTALLED_APPS).
"""

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db.models.constants import LOOKUP_SEP
from unfold.sites import UnfoldAdminSite

from core.admin import DeclaredLookupsAdminMixin

# Values that open something (a signature, a second factor, an API key, a login) and that
# nobody reads back after they were made: "app_label.Model.field". Proxy models (the
# dashboard's space list) inherit their concrete model's secrets.
SECRET_FIELDS = frozenset(
    {
        "spaces.Space.webhook_secret",
        "billing.ApiKey.key_hash",
        "otp_totp.TOTPDevice.key",
        "otp_static.StaticToken.token",
        "axes.AccessLog.session_hash",
        "auth.User.password",
        "sessions.Session.session_key",
        "sessions.Session.session_data",
    }
)

# The admin options that show, filter, search or sort on a field, by name or path.
_FIELD_OPTIONS = (
    "list_display",
    "list_display_links",
    "list_editable",
    "list_filter",
    "search_fields",
    "ordering",
    "sortable_by",
    "date_hierarchy",
    "fields",
    "readonly_fields",
    "raw_id_fields",
    "autocomplete_fields",
    "radio_fields",
    "prepopulated_fields",
    "fieldsets",
)


def is_secret(model, field_name: str) -> bool:
    label = model._meta.concrete_model._meta.label
    return f"{label}.{field_name}" in SECRET_FIELDS


def secret_in_path(model, path: str) -> str | None:
    """The secret field `path` ("space__webhook_secret__startswith", "-key", "^name")
    reaches from `model`, or None. Walks relations; stops at the first part that is not a
    field (a lookup, a transform, a method name)."""
    path = path.lstrip("-^=@")
    for part in path.split(LOOKUP_SEP):
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return None
        if is_secret(model, field.name):
            return f"{model._meta.concrete_model._meta.label}.{field.name}"
        if not field.is_relation or field.related_model is None:
            return None
        model = field.related_model
    return None


def _option_paths(model_admin, option: str) -> list[str]:
    value = getattr(model_admin, option, None)
    if not value:
        return []
    if option == "date_hierarchy":
        return [value]
    if option == "fieldsets":
        return list(flatten_fieldsets(value))
    if option in ("radio_fields", "prepopulated_fields"):
        return [*value, *(source for sources in value.values() for source in sources)]
    paths = []
    for item in value:
        if isinstance(item, (list, tuple)):  # ("space", SomeListFilter)
            item = item[0]
        if isinstance(item, str):
            paths.append(item)
            # A column computed by a method sorts by its own field path.
            method = getattr(model_admin, item, None) or getattr(model_admin.model, item, None)
            order = getattr(method, "admin_order_field", None)
            if isinstance(order, str):
                paths.append(order)
    return paths


def secret_field_errors(model_admin) -> list[checks.Error]:
    """An error for each option of `model_admin` (and of its inlines) that would show, filter,
    search or sort on a secret field; and for a change form left to include every editable
    field when the model has an editable secret."""
    errors = []
    for admin_obj in (model_admin, *(inline(model_admin.model, model_admin.admin_site)
                                     for inline in model_admin.inlines)):  # fmt: skip
        model = admin_obj.model
        for option in _FIELD_OPTIONS:
            for path in _option_paths(admin_obj, option):
                secret = secret_in_path(model, path)
                if secret:
                    errors.append(_secret_error(admin_obj, f"{option} names {secret}"))
        if admin_obj.fields is None and admin_obj.fieldsets is None:
            form_meta = getattr(admin_obj.form, "_meta", None)
            declared = getattr(form_meta, "fields", None)
            excluded = {*(admin_obj.exclude or ()), *(getattr(form_meta, "exclude", None) or ())}
            for field in model._meta.concrete_model._meta.concrete_fields:
                listed = declared in (None, "__all__") or field.name in declared
                if (
                    field.editable
                    and listed
                    and field.name not in excluded
                    and is_secret(model, field.name)
                ):
                    errors.append(
                        _secret_error(
                            admin_obj, f"its change form includes {field.name} (set `fields`)"
                        )
                    )
    return errors


def _secret_error(admin_obj, what: str) -> checks.Error:
    return checks.Error(
        f"{type(admin_obj).__name__}: {what}, a secret the admin never shows, filters, "
        "searches or sorts on (config/admin_site.py SECRET_FIELDS).",
        obj=type(admin_obj),
        id="backoffice.E001",
    )


class BackOfficeAdminSite(UnfoldAdminSite):
    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, DeclaredLookupsAdminMixin):
            admin_class = type(
                admin_class.__name__,
                (DeclaredLookupsAdminMixin, admin_class),
                {"__module__": admin_class.__module__, "__qualname__": admin_class.__qualname__},
            )
        super().register(model_or_iterable, admin_class, **options)

    def check(self, app_configs):
        errors = super().check(app_configs)
        wanted = None if app_configs is None else set(app_configs)
        for model, model_admin in self._registry.items():
            if wanted is None or apps.get_app_config(model._meta.app_label) in wanted:
                errors.extend(secret_field_errors(model_admin))
        return errors
