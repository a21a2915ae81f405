from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from memory_app.api import characters, conversation, conversation_generate, conversation_released, creative, webhooks
from memory_app.api.auth import TokenObtainView
from memory_app.api.cache import CacheNamespaceView, CacheStatsView
from memory_app.api.events import ProjectEventsView
from memory_app.api.files import SignedBlobView
from memory_app.api.health import HealthView
from memory_app.api.history import (
    HistoryArchiveDownloadView,
    HistoryArchiveListView,
    HistoryView,
    TimelineView,
)
from memory_app.api.operations import MemoryAnalysisView, MemoryMetricsView
from memory_app.api.projects import ProjectViewSet
from memory_app.api.search import MemorySearchView


class OptionalSlashRouter(SimpleRouter):
    """Every route answers with or without its trailing slash: the seed's paths have none, DRF's have one."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("projects", ProjectViewSet, basename="project")

urlpatterns = [
    re_path(r"^auth/token/?$", TokenObtainView.as_view(), name="auth-token"),
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    re_path(r"^files/(?P<token>[A-Za-z0-9_:.-]+)/?$", SignedBlobView.as_view(), name="blob-signed"),
    re_path(r"^memory/metrics/?$", MemoryMetricsView.as_view(), name="memory-metrics"),
    re_path(r"^memory/analysis/?$", MemoryAnalysisView.as_view(), name="memory-analysis"),
    re_path(r"^memory/search/?$", MemorySearchView.as_view(), name="memory-search"),
    re_path(r"^memory/cache/stats/?$", CacheStatsView.as_view(), name="cache-stats"),
    re_path(r"^memory/cache/(?P<cache_type>[^/]+)/?$", CacheNamespaceView.as_view(), name="cache-namespace"),
    *conversation_released.urlpatterns,
    *conversation_generate.urlpatterns,
    *conversation.urlpatterns,
    *characters.urlpatterns,
    *creative.urlpatterns,
    *webhooks.urlpatterns,
    re_path(r"^memory/history/(?P<project_id>[^/]+)/?$", HistoryView.as_view(), name="history"),
    re_path(
        r"^memory/history/(?P<project_id>[^/]+)/archives/?$", HistoryArchiveListView.as_view(), name="history-archives"
    ),
    re_path(
        r"^memory/history/(?P<project_id>[^/]+)/archives/(?P<archive_id>[^/]+)/?$",
        HistoryArchiveDownloadView.as_view(),
        name="history-archive-download",
    ),
    re_path(r"^memory/timeline/(?P<project_id>[^/]+)/?$", TimelineView.as_view(), name="timeline"),
    re_path(r"^projects/(?P<project_id>[^/]+)/events/?$", ProjectEventsView.as_view(), name="project-events"),
    *router.urls,
]
