from memory_app.models.history import DEFAULT_SUMMARIES, HistoryAction, HistoryRecord
from memory_app.models.project import PROJECT_ID_PATTERN, Project, validate_project_id
from memory_app.models.workflow import (
    LEGAL_TRANSITIONS,
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
    "HistoryAction",
    "HistoryRecord",
    "Project",
    "SnapshotEvent",
    "UnitStatus",
    "WorkflowSnapshot",
    "WorkflowState",
    "WorkflowStatus",
    "WorkflowUnit",
    "validate_project_id",
]
