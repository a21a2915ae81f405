"""Vocabularies shared by the models and the code above them, in a module that imports nothing of the project.

The models re-export them (``memory_app.models.HistoryAction``), so migrations and existing imports are
unchanged; the pipelines, which must not import the models, take them from here.
"""

from __future__ import annotations

from enum import StrEnum


class HistoryAction(StrEnum):
    """The action vocabulary (seed §3.2), in one place. Every layer records through ``history_record``."""

    PROJECT_CREATED = "project_created"
    TEXT_ANALYZED = "text_analyzed"
    TEXT_SEGMENTATION_COMPLETED = "text_segmentation_completed"
    CHARACTER_EXTRACTED = "character_extracted"
    PLOT_SUMMARIZED = "plot_summarized"
    TEXT_COMPRESSED = "text_compressed"
    CHARACTER_DESIGNED = "character_designed"
    SCENE_COMPOSED = "scene_composed"
    IMAGE_GENERATION_COMPLETED = "image_generation_completed"
    CONTEXT_CREATED = "context_created"
    CONTEXT_CLEARED = "context_cleared"
    CONTEXT_DELETED = "context_deleted"
    CONTEXT_IMPORTED = "context_imported"
    WORKFLOW_STARTED = "workflow_started"
    WORKFLOW_STEP_COMPLETED = "workflow_step_completed"
    WORKFLOW_FAILED = "workflow_failed"
    WORKFLOW_RESUMED = "workflow_resumed"
    WORKFLOW_RESTORED = "workflow_restored"
    WORKFLOW_CANCELLED = "workflow_cancelled"
    WORKFLOW_COMPLETED = "workflow_completed"
    WORKFLOW_STUCK = "workflow_stuck"
    WORKFLOW_AWAITING_INPUT = "workflow_awaiting_input"
    WORKFLOW_CONTINUED = "workflow_continued"
    WORKFLOW_FORKED = "workflow_forked"
    CACHE_CLEARED = "cache_cleared"
    HISTORY_ARCHIVED = "history_archived"
    STYLE_RATED = "style_rated"
    CHARACTER_CREATED = "character_created"
    CHARACTER_UPDATED = "character_updated"
    CHARACTER_DELETED = "character_deleted"
    CHARACTER_MERGED = "character_merged"
    CHARACTER_REVERTED = "character_reverted"
    CHARACTER_REFERENCE_ADDED = "character_reference_added"
    CHARACTER_REFERENCE_REMOVED = "character_reference_removed"
    MEMORY_OPTIMIZED = "memory_optimized"
    INTEGRITY_CHECKED = "integrity_checked"
    WEBHOOK_DISABLED = "webhook_disabled"


# The steps of the registered workflow types (seed §5.3) and the action their completion records: a step with an
# action of its own records it; the others are recorded only as ``workflow_step_completed`` with ``details.step``.
# History filters read a step name as "its completed action" (``action_type=text_segmentation``); a test checks
# that every step of every registered workflow type is listed here.
STEP_ACTIONS: dict[str, HistoryAction | None] = {
    # comic_generation
    "text_segmentation": HistoryAction.TEXT_SEGMENTATION_COMPLETED,
    "script_generation": None,
    "character_design": HistoryAction.CHARACTER_DESIGNED,
    "scene_composition": HistoryAction.SCENE_COMPOSED,
    "image_generation": HistoryAction.IMAGE_GENERATION_COMPLETED,
    "quality_control": None,
    # text_compression
    "text_analysis": HistoryAction.TEXT_ANALYZED,
    "character_extraction": HistoryAction.CHARACTER_EXTRACTED,
    "plot_summarization": HistoryAction.PLOT_SUMMARIZED,
    "compression_execution": HistoryAction.TEXT_COMPRESSED,
    "quality_assessment": None,
}
