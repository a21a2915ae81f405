from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from memory_app.admin.generic import ModelAdmin
from memory_app.models import Project


@admin.register(Project)
class ProjectAdmin(ModelAdmin[Project]):
    # Public ids are per owner: the list shows both, so two "alpha" projects are told apart.
    list_display = ["public_id", "owner", "name", "created_at", "timeline_link"]
    list_select_related = ["owner"]
    list_filter = ["created_at"]
    search_fields = ["public_id", "id", "name", "owner__username"]
    readonly_fields = ["id", "created_at", "updated_at"]
    date_hierarchy = "created_at"

    @admin.display(description="history")
    def timeline_link(self, project: Project) -> str:
        url = reverse("admin:memory_app_history_timeline", args=[project.pk])
        return format_html('<a href="{}">timeline</a>', url)
