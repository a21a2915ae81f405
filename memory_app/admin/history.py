"""Staff browse history in the admin: read-only records, archive manifests, and a per-project timeline page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from memory_app.admin.generic import ModelAdmin
from memory_app.errors import ComicmemError
from memory_app.models import HistoryArchive, HistoryRecord
from memory_app.selectors.history import (
    HistoryFilters,
    HistoryScope,
    history_page,
    history_scope_get_by_key,
)
from memory_app.selectors.history_timeline import history_actions_per_day, history_timeline_summary

TIMELINE_PAGE_SIZE = 200
CHART_WIDTH = 720
CHART_HEIGHT = 120


class ReadOnlyAdmin(ModelAdmin[Any]):
    """History is append-only: the admin can neither add, change nor delete it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(HistoryRecord)
class HistoryRecordAdmin(ReadOnlyAdmin):
    list_display = ["timestamp", "project", "action", "summary", "user", "timeline_link"]
    list_filter = ["action", ("project", admin.RelatedOnlyFieldListFilter), ("user", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["summary", "details"]
    date_hierarchy = "timestamp"
    list_select_related = ["project", "user"]
    show_full_result_count = False  # a COUNT(*) over the whole table on every page is what we avoid
    readonly_fields = [
        "project",
        "timestamp",
        "action",
        "summary",
        "details",
        "user",
        "request_id",
        "workflow_id",
    ]

    @admin.display(description="timeline")
    def timeline_link(self, record: HistoryRecord) -> str:
        if record.project_id is None:
            return "—"
        url = reverse("admin:memory_app_history_timeline", args=[record.project_id])
        return format_html('<a href="{}">timeline</a>', url)

    def get_urls(self) -> list[URLPattern]:
        timeline = self.admin_site.admin_view(self.timeline_view)
        return [
            path("timeline/<str:project_id>/", timeline, name="memory_app_history_timeline"),
            *super().get_urls(),
        ]

    def timeline_view(self, request: HttpRequest, project_id: str) -> HttpResponse:
        """Chronological, grouped by day, the summary figures on top and a chart of actions per day."""
        try:
            scope = history_scope_get_by_key(user=request.user, key=project_id)
        except ComicmemError as exc:
            return TemplateResponse(
                request,
                "admin/memory_app/history_timeline.html",
                {**self.admin_site.each_context(request), "title": "Timeline", "error": exc.message},
                status=exc.status_code,
            )
        filters = HistoryFilters()
        page = history_page(
            scope=scope, filters=filters, limit=TIMELINE_PAGE_SIZE, order="asc", cursor=request.GET.get("cursor")
        )
        summary = history_timeline_summary(scope=scope, filters=filters)
        days: list[dict[str, Any]] = []
        for record in page.records:
            day = record.timestamp.date()
            if not days or days[-1]["day"] != day:
                days.append({"day": day, "records": []})
            days[-1]["records"].append(record)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Timeline of {_scope_title(scope)}",
            "scope": scope,
            "summary": summary,
            "days": days,
            "chart": _chart(history_actions_per_day(scope=scope, filters=filters)),
            "next_cursor": page.next_cursor,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/memory_app/history_timeline.html", context)


def _scope_title(scope: HistoryScope) -> str:
    return scope.public_id


def _chart(per_day: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of an inline SVG: one per day that has records, scaled to the busiest day."""
    if not per_day:
        return {"bars": [], "width": CHART_WIDTH, "height": CHART_HEIGHT, "max": 0}
    busiest = max(row["count"] for row in per_day)
    slot = CHART_WIDTH / len(per_day)
    bars = []
    for index, row in enumerate(per_day):
        height = max(2, round((CHART_HEIGHT - 20) * row["count"] / busiest))
        bars.append(
            {
                "day": row["day"],
                "count": row["count"],
                "x": round(index * slot + slot * 0.1, 1),
                "width": round(max(1.0, slot * 0.8), 1),
                "y": CHART_HEIGHT - 14 - height,
                "height": height,
            }
        )
    return {"bars": bars, "width": CHART_WIDTH, "height": CHART_HEIGHT, "max": busiest}


@admin.register(HistoryArchive)
class HistoryArchiveAdmin(ReadOnlyAdmin):
    list_display = ["scope", "month", "record_count", "size_bytes", "compressed", "updated_at"]
    list_filter = ["compressed"]
    search_fields = ["scope", "month"]
    readonly_fields = [field.name for field in HistoryArchive._meta.fields]
