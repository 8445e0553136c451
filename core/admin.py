"""Admin behaviour every model admin of the project shares (domain-free)."""

import functools

from django.contrib import admin
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse


class DeclaredLookupsChangeList(ChangeList):
    """A changelist that filters only by what its admin declares: the list filters (each
    filter's own parameters), the search box and the date hierarchy. Any other lookup in
    the query string (`?webhook_secret__startswith=ab`) is refused with a 400 before a row
    is read, so a list cannot be used as an oracle that answers "some row starts with ab".

    Django's ModelAdmin.lookup_allowed() accepts every lookup on the model's own fields
    (it only guards relations); that is the hole this closes. The changelist's own
    parameters (page, order, search, popup, `_to_field`, facets, the error flag) are not
    lookups and Django removes them before this point.
    """

    def get_filters(self, request):
        asked = set(self.get_filters_params())
        filter_specs, has_filters, remaining, may_have_duplicates, has_active_filters = (
            super().get_filters(request)
        )
        # Every list filter (shown or not) has popped the parameters it declares, and the
        # date hierarchy its year/month/day: what the query string asked for and is still
        # here was declared by nothing. Nothing has been filtered yet (the remaining
        # lookups are applied by get_queryset, after this).
        undeclared = asked & set(remaining)
        if self.date_hierarchy and f"{self.date_hierarchy}__year" in asked:
            # The hierarchy turned year/month/day into these two bounds (its own values,
            # replacing any the query string sent).
            undeclared -= {f"{self.date_hierarchy}__gte", f"{self.date_hierarchy}__lt"}
        if undeclared:
            raise DisallowedModelAdminLookup(
                f"Filtering by {', '.join(sorted(undeclared))} is not allowed."
            )
        return filter_specs, has_filters, remaining, may_have_duplicates, has_active_filters


@functools.cache
def declared_lookups_only(changelist_class: type[ChangeList]) -> type[ChangeList]:
    """`changelist_class` (Django's, unfold's, an admin's own) with the check of
    DeclaredLookupsChangeList in front of it."""
    if issubclass(changelist_class, DeclaredLookupsChangeList):
        return changelist_class
    return type(changelist_class.__name__, (DeclaredLookupsChangeList, changelist_class), {})


class DeclaredLookupsAdminMixin:
    """Every changelist of this admin accepts only declared lookups (DeclaredLookupsChangeList).

    The admin site (config/admin_site.py) puts this in front of every admin registered on
    it, ours and the libraries', so that no admin can forget it."""

    def get_changelist(self, request, **kwargs):
        return declared_lookups_only(super().get_changelist(request, **kwargs))


def object_id_or_404(opts, object_id, field_name: str | None = None):
    """`object_id` from an admin URL as a value of the model's primary key (or `field_name`),
    or Http404 when it cannot be one ("abc" for an integer key).

    Django's ModelAdmin.get_object swallows such an id and its views answer with a redirect,
    but code that filters on the raw text (a custom history or step view) raises ValueError,
    a 500. Checked once, here, every such URL is a plain 404.
    """
    try:
        field = opts.pk if field_name is None else opts.get_field(field_name)
        return field.to_python(object_id)
    except (ValidationError, FieldDoesNotExist, ValueError, TypeError):
        raise Http404("No such object.") from None


class ObjectIdAdminMixin:
    """A malformed object id on any of the admin's object URLs is a 404: change, delete,
    history (everything that calls get_object) and Django's catch-all below the model."""

    def get_object(self, request, object_id, from_field=None):
        object_id_or_404(self.opts, object_id, from_field)
        return super().get_object(request, object_id, from_field)

    def get_urls(self):
        urls = super().get_urls()
        # Django's last pattern, "<path:object_id>/", redirects any other path below the model
        # (".../abc/enter_amount/") to the change page of an object that cannot exist. Answer
        # a malformed id with 404 directly; a well-formed one is still redirected.
        catch_all = urls[-1]
        if catch_all.name is None and str(catch_all.pattern) == "<path:object_id>/":
            urls[-1] = path("<path:object_id>/", self.admin_site.admin_view(self._to_change_view))
        return urls

    def _to_change_view(self, request, object_id):
        object_id_or_404(self.opts, unquote(object_id))
        opts = self.opts
        name = f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change"
        return HttpResponseRedirect(reverse(name, args=[object_id]))


class WorkQueueFilter(admin.SimpleListFilter):
    """A changelist filter "?queue=<key>" that narrows the list to one work queue of the home
    page (config/work_queue.py), so a queue's "show all" opens exactly its rows.

    Subclasses set `queues = {key: (label, rule)}`, `rule(request)` returning a Q."""

    title = "work queue"
    parameter_name = "queue"
    # On no field: code that looks the changelist's filters up by field path skips it.
    field_path = None
    queues: dict = {}

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _rule) in self.queues.items()]

    def queryset(self, request, queryset):
        entry = self.queues.get(self.value())
        return queryset.filter(entry[1](request)) if entry else queryset


def admin_refusal_page(request, admin_site, *, message, back_url, title="Not allowed", status=403):
    """A refusal inside the admin (its layout, header and menu) that says why and leads back,
    for a step the user may not take here, instead of a bare 403."""
    return TemplateResponse(
        request,
        "admin/error_page.html",
        {
            **admin_site.each_context(request),
            "status": status,
            "title": title,
            "message": message,
            "back_url": back_url,
        },
        status=status,
    )


def badge_colours(choices, colours: dict) -> dict:
    """unfold's `@display(label=...)` mapping for every value of `choices` (a TextChoices):
    the colour given, else the plain grey label. A value missing from the mapping would show
    its raw code instead of its label."""
    return {value: colours.get(value, "") for value in choices.values}
