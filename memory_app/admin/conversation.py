from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from memory_app.admin.generic import ModelAdmin, TabularInline
from memory_app.models import ContextMessage, ConversationContext

# Shown and read-only alike: one tuple serves both (the stubs type the two attributes as different lists).
_MESSAGE_FIELDS = ("position", "role", "content", "token_count", "archived", "is_summary", "unanswered", "created_at")


class ContextMessageInline(TabularInline[ContextMessage, ConversationContext]):
    model = ContextMessage
    fields = _MESSAGE_FIELDS
    readonly_fields = _MESSAGE_FIELDS
    ordering = ["position"]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: ConversationContext | None = None) -> bool:
        # Messages are written through the conversation services only, which keep the window's totals right.
        return False


@admin.register(ConversationContext)
class ConversationContextAdmin(ModelAdmin[ConversationContext]):
    list_display = [
        "id",
        "owner",
        "context_type",
        "project",
        "is_default",
        "system_count",
        "window_count",
        "last_updated",
    ]
    list_filter = ["context_type", "is_default"]
    search_fields = ["id", "owner__username"]
    readonly_fields = [
        "id",
        "owner",
        "created_at",
        "last_updated",
        "next_position",
        "system_count",
        "system_tokens",
        "window_count",
        "window_tokens",
        "max_messages",
        "max_tokens",
    ]
    list_select_related = ["owner", "project"]
    inlines = [ContextMessageInline]
