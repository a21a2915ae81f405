"""Admin for metric snapshots: read-only, newest first (the analysis reads them; the snapshot task writes them), and
the staff dashboard drawn from them (linked from the admin index)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from memory_app.admin.charts import Series, line_chart
from memory_app.admin.generic import ModelAdmin
from memory_app.errors import ComicmemError
from memory_app.models import MetricSnapshot
from memory_app.selectors.cache import cache_statistics_list
from memory_app.selectors.dashboard import dashboard_series
from memory_app.selectors.operations import workflow_status_counts

# The windows the dashboard offers, in hours; anything else asked for is the default.
DASHBOARD_WINDOWS = (6, 24, 24 * 7, 24 * 30)
DEFAULT_WINDOW = 24


@admin.register(MetricSnapshot)
class MetricSnapshotAdmin(ModelAdmin[MetricSnapshot]):
    list_display = ["taken_at", "memory_percentage", "active_contexts"]
    date_hierarchy = "taken_at"
    readonly_fields = [
        "taken_at",
        "memory_total",
        "memory_used",
        "memory_percentage",
        "active_contexts",
        "cache",
        "workflow_states",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        return [
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="memory_app_dashboard"),
            *super().get_urls(),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Cache hit rate and size, and runs per status, over the chosen window; the cache counters as they are."""
        requested = request.GET.get("hours", "")
        hours = int(requested) if requested.isdigit() and int(requested) in DASHBOARD_WINDOWS else DEFAULT_WINDOW
        series = dashboard_series(hours=hours)
        try:
            statistics: dict[str, dict[str, Any]] | None = cache_statistics_list()
            statistics_error = ""
        except ComicmemError as exc:
            statistics, statistics_error = None, exc.message

        def chart(points: dict[str, list[Any]], **options: Any) -> dict[str, Any]:
            return line_chart([Series(name=name, points=values) for name, values in sorted(points.items())], **options)

        context = {
            **self.admin_site.each_context(request),
            "title": "Dashboard",
            "opts": self.model._meta,
            "hours": hours,
            "windows": DASHBOARD_WINDOWS,
            "series": series,
            "hit_rate_chart": chart(series.hit_rate, y_max=1.0),
            "entries_chart": chart(series.entries),
            "memory_chart": chart(
                {name: [(when, value / 1024) for when, value in points] for name, points in series.memory_bytes.items()}
            ),
            "runs_chart": chart(series.runs_by_status),
            "statistics": statistics,
            "statistics_error": statistics_error,
            "runs_now": workflow_status_counts(),
        }
        return TemplateResponse(request, "admin/memory_app/dashboard.html", context)
