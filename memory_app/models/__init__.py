from memory_app.models.history import (
    DEFAULT_SUMMARIES,
    SYSTEM_SCOPE,
    HistoryAction,
    HistoryArchive,
    HistoryRecord,
)
from memory_app.models.project import PROJECT_ID_PATTERN, Project, validate_project_id

__all__ = [
    "DEFAULT_SUMMARIES",
    "PROJECT_ID_PATTERN",
    "SYSTEM_SCOPE",
    "HistoryAction",
    "HistoryArchive",
    "HistoryRecord",
    "Project",
    "validate_project_id",
]
