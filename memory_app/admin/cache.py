from __future__ import annotations

import base64

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from memory_app.admin.generic import ModelAdmin
from memory_app.models import CacheEntry, CacheStatistics
from memory_app.selectors.cache import human_size
from memory_app.services.cache import cache_file_read_verified

_PREVIEWABLE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@admin.register(CacheEntry)
class CacheEntryAdmin(ModelAdmin[CacheEntry]):
    list_display = ["namespace", "short_key", "content_type", "size", "hit_count", "expires_at", "last_accessed_at"]
    list_filter = ["namespace", "content_type", "compressed"]
    search_fields = ["key", "checksum"]
    ordering = ["namespace", "-last_accessed_at"]
    readonly_fields = [
        "namespace",
        "key",
        "blob_name",
        "size_bytes",
        "content_type",
        "value_format",
        "compressed",
        "checksum",
        "created_at",
        "expires_at",
        "last_accessed_at",
        "hit_count",
        "preview",
    ]

    # Entries are written by the cache only; staff may look and delete (the blob is then an orphan for cleanup).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CacheEntry | None = None) -> bool:
        return False

    @admin.display(description="key")
    def short_key(self, entry: CacheEntry) -> str:
        return entry.key[:16]

    @admin.display(description="size", ordering="size_bytes")
    def size(self, entry: CacheEntry) -> str:
        return human_size(entry.size_bytes)

    @admin.display(description="preview")
    def preview(self, entry: CacheEntry) -> str:
        if entry.content_type not in _PREVIEWABLE:
            return "-"
        data = cache_file_read_verified(entry=entry, max_bytes=settings.MEMORY.cache_options.admin_preview_max_bytes)
        if data is None:
            return "(too large to preview, missing or corrupted)"
        encoded = base64.b64encode(data).decode("ascii")
        return format_html(
            '<img src="data:{};base64,{}" style="max-width: 480px; max-height: 480px;" alt="cached image">',
            entry.content_type,
            encoded,
        )


@admin.register(CacheStatistics)
class CacheStatisticsAdmin(ModelAdmin[CacheStatistics]):
    list_display = ["namespace", "hits", "misses", "corrupted", "evictions"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CacheStatistics | None = None) -> bool:
        return False
