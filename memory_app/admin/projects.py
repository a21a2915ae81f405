from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from memory_app.admin.generic import ModelAdmin
from memory_app.models import Project
from memory_app.services.projects import project_delete

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from django.http import HttpRequest


@admin.register(Project)
class ProjectAdmin(ModelAdmin[Project]):
    # Public ids are per owner: the list shows both, so two "alpha" projects are told apart.
    list_display = ["public_id", "owner", "name", "created_at", "timeline_link"]
    list_select_related = ["owner"]
    list_filter = ["created_at"]
    search_fields = ["public_id", "id", "name", "owner__username"]
    readonly_fields = ["id", "created_at", "updated_at"]
    date_hierarchy = "created_at"

    # Deleting from the admin is the service's delete: the project's files go too (after commit).
    def delete_model(self, request: HttpRequest, obj: Project) -> None:
        project_delete(project=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        for project in queryset:
            project_delete(project=project)

    @admin.display(description="history")
    def timeline_link(self, project: Project) -> str:
        url = reverse("admin:memory_app_history_timeline", args=[project.pk])
        return format_html('<a href="{}">timeline</a>', url)
