"""Admin for metric snapshots: read-only, newest first (the analysis reads them; the snapshot task writes them)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from memory_app.admin.generic import ModelAdmin
from memory_app.models import MetricSnapshot


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
