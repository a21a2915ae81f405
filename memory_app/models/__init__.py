from memory_app.models.cache import CacheEntry, CacheStatistics, CacheValueFormat
from memory_app.models.history import DEFAULT_SUMMARIES, HistoryAction, HistoryRecord
from memory_app.models.project import PROJECT_ID_PATTERN, Project, validate_project_id

__all__ = [
    "DEFAULT_SUMMARIES",
    "PROJECT_ID_PATTERN",
    "CacheEntry",
    "CacheStatistics",
    "CacheValueFormat",
    "HistoryAction",
    "HistoryRecord",
    "Project",
    "validate_project_id",
]
