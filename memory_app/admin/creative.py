from __future__ import annotations

from django.contrib import admin

from memory_app.admin.generic import ModelAdmin, TabularInline
from memory_app.models import Character, CharacterReference, CharacterVersion, StyleTemplate, StyleUsage


class CharacterVersionInline(TabularInline[CharacterVersion, Character]):
    """The character's changes, read-only: a version is history (revert through the API makes a new one)."""

    model = CharacterVersion
    extra = 0
    can_delete = False
    fields = ["version", "action", "source", "user", "workflow_id", "changes", "created_at"]
    readonly_fields = ["version", "action", "source", "user", "workflow_id", "changes", "created_at"]
    ordering = ["-version"]

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


class CharacterReferenceInline(TabularInline[CharacterReference, Character]):
    model = CharacterReference
    extra = 0
    can_delete = False
    fields = ["storage_name", "content_type", "width", "height", "size_bytes", "dominant_colors", "created_at"]
    readonly_fields = ["storage_name", "content_type", "width", "height", "size_bytes", "dominant_colors", "created_at"]

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Character)
class CharacterAdmin(ModelAdmin[Character]):
    list_display = ["name", "project", "mentions", "last_updated"]
    list_filter = ["project"]
    search_fields = ["name", "aliases", "project__public_id", "project__owner__username"]
    readonly_fields = ["created_at", "last_updated", "locked_fields"]
    inlines = [CharacterVersionInline, CharacterReferenceInline]


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
