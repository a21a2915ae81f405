from memory_app.models.cache import CacheEntry, CacheStatistics, CacheValueFormat
from memory_app.models.conversation import (
    SUMMARY_POSITION,
    ContextMessage,
    ConversationContext,
    MessageRole,
    ReleasedContext,
)
from memory_app.models.creative import STYLE_ID_PATTERN, Character, StyleTemplate, StyleUsage
from memory_app.models.history import (
    DEFAULT_SUMMARIES,
    SYSTEM_SCOPE,
    HistoryAction,
    HistoryArchive,
    HistoryArchivedCount,
    HistoryDailyCount,
    HistoryRecord,
    archived_step,
)
from memory_app.models.operations import MetricSnapshot
from memory_app.models.project import PROJECT_ID_PATTERN, Project, validate_project_id
from memory_app.models.storage import ProjectCacheUse, StorageDeletion, StorageDeletionReason
from memory_app.models.workflow import (
    LEGAL_TRANSITIONS,
    UNFINISHED_STATUSES,
    SnapshotEvent,
    UnitStatus,
    WorkflowSnapshot,
    WorkflowState,
    WorkflowStatus,
    WorkflowUnit,
)

__all__ = [
    "DEFAULT_SUMMARIES",
    "LEGAL_TRANSITIONS",
    "PROJECT_ID_PATTERN",
    "STYLE_ID_PATTERN",
    "SUMMARY_POSITION",
    "SYSTEM_SCOPE",
    "UNFINISHED_STATUSES",
    "CacheEntry",
    "CacheStatistics",
    "CacheValueFormat",
    "Character",
    "ContextMessage",
    "ConversationContext",
    "HistoryAction",
    "HistoryArchive",
    "HistoryArchivedCount",
    "HistoryDailyCount",
    "HistoryRecord",
    "MessageRole",
    "MetricSnapshot",
    "Project",
    "ProjectCacheUse",
    "ReleasedContext",
    "SnapshotEvent",
    "StorageDeletion",
    "StorageDeletionReason",
    "StyleTemplate",
    "StyleUsage",
    "UnitStatus",
    "WorkflowSnapshot",
    "WorkflowState",
    "WorkflowStatus",
    "WorkflowUnit",
    "archived_step",
    "validate_project_id",
]
