"""The per-space dashboard: figures of charges and collections over the last 30 days, drawn
with the Chart.js that ships inside django-unfold (no build step, no network at run time).

Every number comes from a selector of the room that owns the data (billing, chargeflows,
payments); this module, in the highest of them, only assembles them into the page's charts.
The page is an admin view (DashboardAdmin.get_urls), so the admin's login, second factor and
space scoping apply to it.
"""

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.contrib import admin
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from unfold.admin import ModelAdmin

from billing import selectors as billing_selectors
from billing.models import ChargeIssue
from core.money import from_minor
from payments import selectors as payments_selectors
from spaces.admin import SpaceScopedAdminMixin

from . import selectors
from .models import Dashboard

DAYS = 30

# Unfold's palette (CSS variables its chart script resolves), and a green for money recovered.
PRIMARY = "var(--color-primary-600)"
RECOVERED = "#16a34a"
FAILED = "#dc2626"


@dataclass
class SpaceDashboard:
    """The figures of one space's dashboard, as the selectors return them."""

    days: list[date]
    amounts: dict[str, dict[str, list[int]]]  # currency -> {"charged": [...], "recovered": [...]}
    open_charges: dict[str, int]
    collections_by_level: list[dict]
    recovery_per_level: list[dict]
    recovery_per_decline_code: list[dict]
    recovery_time_median: timedelta | None
    outbound_failures: dict
    delivery_failures: int
    provider_event_failures: dict | None = field(default=None)


def space_dashboard(
    *, space_id: int, include_provider_events: bool, now: datetime | None = None
) -> SpaceDashboard:
    """Every figure of the space's dashboard for the 30 days up to `now` (today included), in
    a fixed number of queries whatever the number of rows: 9, and one more with the provider
    events (which belong to no space, so only superusers see them)."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    days = [today - timedelta(days=DAYS - 1 - n) for n in range(DAYS)]
    since = timezone.make_aware(datetime.combine(days[0], time.min))

    position = {day: n for n, day in enumerate(days)}
    amounts: dict[str, dict[str, list[int]]] = {}
    for row in payments_selectors.attempt_amounts_per_day(space_id=space_id, since=since):
        series = amounts.setdefault(
            row["currency"], {"charged": [0] * DAYS, "recovered": [0] * DAYS}
        )
        if row["day"] in position:
            series[row["kind"]][position[row["day"]]] += row["amount_minor"]

    return SpaceDashboard(
        days=days,
        amounts=dict(sorted(amounts.items())),
        open_charges=billing_selectors.charge_issue_open_counts(space_id=space_id),
        collections_by_level=selectors.collection_counts_by_level(space_id=space_id),
        recovery_per_level=selectors.recovery_rate_per_level(space_id=space_id, since=since),
        recovery_per_decline_code=selectors.recovery_rate_per_decline_code(
            space_id=space_id, since=since
        ),
        recovery_time_median=selectors.recovery_time_median(space_id=space_id, since=since),
        outbound_failures=payments_selectors.outbound_event_failures(space_id=space_id),
        delivery_failures=payments_selectors.delivery_failure_count(space_id=space_id, since=since),
        provider_event_failures=(
            payments_selectors.provider_event_failures() if include_provider_events else None
        ),
    )


def _rate(recovered: int, finished: int) -> float:
    return round(100 * recovered / finished, 1) if finished else 0.0


def duration_text(value: timedelta | None) -> str:
    """ "2 d 4 h", "3 h 5 min", "40 s": the median time to recovery as staff read it."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"


def _chart(labels: list[str], datasets: list[dict]) -> str:
    # Unfold's chart component puts this JSON into the canvas's data-value attribute (escaped
    # by the template) and its app.js draws it: no inline script on the page.
    return json.dumps({"labels": labels, "datasets": datasets})


def _bar(label: str, values: list, color: str = PRIMARY, suffix: str = "") -> dict:
    dataset = {
        "label": label,
        "data": values,
        "backgroundColor": color,
        "displayYAxis": True,
        # Unfold draws 4-pixel bars, made for long series; these have a few bars each.
        "maxBarThickness": 40,
    }
    if suffix:
        dataset["suffixYAxis"] = suffix
    return dataset


def _rates(rows: list[dict], label) -> dict:
    """A recovery-rate chart and its table of "recovered of finished" counts."""
    rows = [
        {**row, "label": label(row), "rate": _rate(row["recovered"], row["finished"])}
        for row in rows
    ]
    rates = _bar("Recovered (%)", [row["rate"] for row in rows], RECOVERED, "%")
    return {"rows": rows, "data": _chart([row["label"] for row in rows], [rates])}


# Unfold's defaults hide the legend, which two series on one chart need.
LEGEND_OPTIONS = json.dumps(
    {
        "animation": False,
        "responsive": True,
        "maintainAspectRatio": False,
        "plugins": {"legend": {"display": True, "align": "end"}},
        "scales": {"y": {"beginAtZero": True}},
    }
)


def dashboard_charts(figures: SpaceDashboard) -> dict:
    """The page's charts and tables from the figures (no query)."""
    day_labels = [day.strftime("%d %b") for day in figures.days]
    amount_charts = []
    for currency, series in figures.amounts.items():

        def major(values, currency=currency):
            return [float(from_minor(value, currency)) for value in values]

        amount_charts.append(
            {
                "currency": currency,
                "charged_total": from_minor(sum(series["charged"]), currency),
                "recovered_total": from_minor(sum(series["recovered"]), currency),
                "data": _chart(
                    day_labels,
                    [
                        {
                            "label": f"Charged ({currency})",
                            "data": major(series["charged"]),
                            "borderColor": PRIMARY,
                            "backgroundColor": PRIMARY,
                        },
                        {
                            "label": f"Recovered by charge flows ({currency})",
                            "data": major(series["recovered"]),
                            "borderColor": RECOVERED,
                            "backgroundColor": RECOVERED,
                        },
                    ],
                ),
            }
        )

    state_labels = dict(ChargeIssue.State.choices)
    open_states = [state for state in ChargeIssue.State.values if state in figures.open_charges]
    level_label = "{flow} · {position}. {level}".format
    return {
        "amount_charts": amount_charts,
        "open_charges": {
            "total": sum(figures.open_charges.values()),
            "data": _chart(
                [state_labels[state] for state in open_states],
                [_bar("Open charges", [figures.open_charges[state] for state in open_states])],
            ),
        },
        "collections_by_level": {
            "total": sum(row["count"] for row in figures.collections_by_level),
            "data": _chart(
                [level_label(**row) for row in figures.collections_by_level],
                [_bar("Running collections", [r["count"] for r in figures.collections_by_level])],
            ),
        },
        "recovery_per_level": _rates(figures.recovery_per_level, lambda r: level_label(**r)),
        "recovery_per_decline_code": _rates(
            figures.recovery_per_decline_code, lambda r: r["code"] or "(no charge)"
        ),
        "recovery_time_median": duration_text(figures.recovery_time_median),
        "legend_options": LEGEND_OPTIONS,
    }


@admin.register(Dashboard)
class DashboardAdmin(SpaceScopedAdminMixin, ModelAdmin):
    """The list of the user's spaces, each with its dashboard; nothing here is edited."""

    space_field = None
    list_display = ("name", "slug", "open_dashboard")
    list_display_links = None
    search_fields = ("name", "slug")

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        # Every staff member may see the figures of their own spaces (get_queryset scopes).
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="dashboard")
    def open_dashboard(self, obj):
        url = reverse("admin:chargeflows_dashboard_space", args=[obj.pk])
        return format_html('<a href="{}">Open the dashboard</a>', url)

    def get_urls(self):
        return [
            path(
                "<int:space_id>/",
                self.admin_site.admin_view(self.dashboard_view),
                name="chargeflows_dashboard_space",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # A space's "change" page here is its dashboard (the Space admin edits the space).
        space = self.get_object(request, object_id)
        if space is None:
            raise Http404("No such space.")
        return HttpResponseRedirect(reverse("admin:chargeflows_dashboard_space", args=[space.pk]))

    def dashboard_view(self, request, space_id: int):
        space = self.get_queryset(request).filter(pk=space_id).first()
        if space is None:
            # Another tenant's space is as absent as one that does not exist.
            raise Http404("No such space.")
        figures = space_dashboard(
            space_id=space.pk, include_provider_events=request.user.is_superuser
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Dashboard of {space.name}",
            "space": space,
            "figures": figures,
            "charts": dashboard_charts(figures),
            "days": DAYS,
        }
        return TemplateResponse(request, "admin/chargeflows/dashboard/space.html", context)
