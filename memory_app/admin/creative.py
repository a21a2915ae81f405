from __future__ import annotations

from django.contrib import admin

from memory_app.admin.generic import ModelAdmin, TabularInline
from memory_app.models import Character, StyleTemplate, StyleUsage


@admin.register(Character)
class CharacterAdmin(ModelAdmin[Character]):
    list_display = ["name", "project", "mentions", "last_updated"]
    list_filter = ["project"]
    search_fields = ["name", "project__public_id", "project__owner__username"]
    readonly_fields = ["created_at", "last_updated"]


class StyleUsageInline(TabularInline[StyleUsage, StyleTemplate]):
    model = StyleUsage
    extra = 0
    fields = ["project", "user", "workflow_id", "used_at", "satisfaction_score", "rated_at"]
    readonly_fields = ["used_at", "rated_at"]
    raw_id_fields = ["project", "user"]


@admin.register(StyleTemplate)
class StyleTemplateAdmin(ModelAdmin[StyleTemplate]):
    list_display = ["public_id", "owner", "name", "updated_at"]
    search_fields = ["public_id", "name", "owner__username"]
    readonly_fields = ["template_id", "created_at", "updated_at"]
    inlines = [StyleUsageInline]


@admin.register(StyleUsage)
class StyleUsageAdmin(ModelAdmin[StyleUsage]):
    list_display = ["style", "project", "user", "used_at", "satisfaction_score"]
    list_filter = ["style"]
    readonly_fields = ["used_at"]
    raw_id_fields = ["project", "user"]
