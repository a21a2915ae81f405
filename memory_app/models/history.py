"""Project history (seed §3): append-only records of what happened, one row each."""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models

# Defined below the models (the pipelines use it and import no models); re-exported here for everyone else.
from memory_app.choices import HistoryAction as HistoryAction

# The summary written when the caller gives none.
DEFAULT_SUMMARIES: dict[str, str] = {
    HistoryAction.PROJECT_CREATED: "Project created.",
    HistoryAction.TEXT_ANALYZED: "Text analysed.",
    HistoryAction.TEXT_SEGMENTATION_COMPLETED: "Text segmented into panels.",
    HistoryAction.CHARACTER_EXTRACTED: "Characters extracted.",
    HistoryAction.PLOT_SUMMARIZED: "Plot summarised.",
    HistoryAction.TEXT_COMPRESSED: "Text compressed.",
    HistoryAction.CHARACTER_DESIGNED: "Characters designed.",
    HistoryAction.SCENE_COMPOSED: "Scenes composed.",
    HistoryAction.IMAGE_GENERATION_COMPLETED: "Images generated.",
    HistoryAction.CONTEXT_CREATED: "Conversation context created.",
    HistoryAction.CONTEXT_CLEARED: "Conversation context cleared.",
    HistoryAction.CONTEXT_DELETED: "Conversation context deleted.",
    HistoryAction.CONTEXT_IMPORTED: "Conversation contexts imported.",
    HistoryAction.WORKFLOW_STARTED: "Workflow started.",
    HistoryAction.WORKFLOW_STEP_COMPLETED: "Workflow step completed.",
    HistoryAction.WORKFLOW_FAILED: "Workflow failed.",
    HistoryAction.WORKFLOW_RESUMED: "Workflow resumed.",
    HistoryAction.WORKFLOW_RESTORED: "Workflow restored to an earlier snapshot.",
    HistoryAction.WORKFLOW_CANCELLED: "Workflow cancelled.",
    HistoryAction.WEBHOOK_DISABLED: "Webhook endpoint disabled after repeated failures.",
    HistoryAction.WORKFLOW_COMPLETED: "Workflow completed.",
    HistoryAction.WORKFLOW_STUCK: "Workflow flagged as stuck.",
    HistoryAction.CACHE_CLEARED: "Cache cleared.",
    HistoryAction.HISTORY_ARCHIVED: "Old history archived.",
    HistoryAction.STYLE_RATED: "Style template rated.",
    HistoryAction.CHARACTER_CREATED: "Character created.",
    HistoryAction.CHARACTER_UPDATED: "Character edited.",
    HistoryAction.CHARACTER_DELETED: "Character deleted.",
    HistoryAction.CHARACTER_MERGED: "Character merged into another.",
    HistoryAction.CHARACTER_REVERTED: "Character reverted to an earlier version.",
    HistoryAction.CHARACTER_REFERENCE_ADDED: "Character reference image added.",
    HistoryAction.CHARACTER_REFERENCE_REMOVED: "Character reference image removed.",
    HistoryAction.MEMORY_OPTIMIZED: "Memory optimizer ran above the memory threshold.",
    HistoryAction.INTEGRITY_CHECKED: "Integrity check found problems.",
}


class AppendOnlyQuerySet(models.QuerySet["HistoryRecord"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise TypeError("history records are append-only: they are never updated")


class HistoryRecord(models.Model):
    # Null for system-wide events that belong to no project (a cache namespace cleared by staff).
    project = models.ForeignKey(
        "memory_app.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="history_records"
    )
    timestamp = models.DateTimeField()
    action = models.SlugField(max_length=64)
    summary = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    request_id = models.CharField(max_length=128, blank=True, default="")
    workflow_id = models.UUIDField(null=True, blank=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [
            # "newest records of a project" and keyset pagination over (timestamp, id)
            models.Index(fields=["project", "-timestamp", "-id"], name="history_project_newest"),
            # "records of one action type in a date range"
            models.Index(fields=["project", "action", "-timestamp", "-id"], name="history_project_action"),
            models.Index(fields=["workflow_id"], name="history_workflow"),
            # retention: "the oldest records of any project, older than the cutoff"
            models.Index(fields=["timestamp", "id"], name="history_timestamp"),
        ]

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.project_id} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The one invariant a model may guard itself: an existing record is never written again.
        if self.pk is not None and not self._state.adding:
            raise TypeError("history records are append-only: they are never updated")
        super().save(*args, **kwargs)


# The archive scope of system-wide records (project is null). Not a valid project id, so it never collides.
SYSTEM_SCOPE = "_system"


class HistoryDailyCount(models.Model):
    """How many records of one action one scope (a project, or ``SYSTEM_SCOPE``) holds on one UTC day.

    Kept by database triggers on ``HistoryRecord`` (migration ``history_daily_counts``): every insert and delete
    of records, however it is made (the ORM, bulk inserts, cascades of a project's deletion, raw SQL), changes the
    counts in the same transaction. Nothing in Python writes this table. The timeline summary sums these rows
    instead of scanning the records, so its cost follows the number of days, not of records.
    """

    scope = models.CharField(max_length=64)
    day = models.DateField()
    action = models.SlugField(max_length=64, db_index=False)
    record_count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "day", "action"], name="history_daily_count_scope_day_action")
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.day} {self.action}: {self.record_count}"


class HistoryArchive(models.Model):
    """The manifest of one archive file: every archived record of one scope (a project) and one month.

    A record is either a row of ``HistoryRecord`` or a line of the file this manifest names, never both: the
    manifest and the deletion of the archived rows change in one transaction, after the file was written and
    read back. Files no manifest names are leftovers of an interrupted run and are removed by the next run.
    """

    scope = models.CharField(max_length=64)  # the project id, or SYSTEM_SCOPE
    project = models.ForeignKey(
        "memory_app.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="history_archives"
    )
    month = models.CharField(max_length=6)  # YYYYMM, UTC
    file_name = models.CharField(max_length=300)
    compressed = models.BooleanField(default=True)
    checksum = models.CharField(max_length=64)  # sha256 of the uncompressed JSON lines
    size_bytes = models.PositiveBigIntegerField(default=0)
    record_count = models.PositiveIntegerField(default=0)
    first_record_id = models.BigIntegerField(null=True)
    last_record_id = models.BigIntegerField(null=True)
    first_timestamp = models.DateTimeField(null=True)
    last_timestamp = models.DateTimeField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "-month"]
        constraints = [models.UniqueConstraint(fields=["scope", "month"], name="history_archive_scope_month")]

    def __str__(self) -> str:
        return f"{self.scope} {self.month} ({self.record_count} records)"

    @property
    def download_name(self) -> str:
        scope = self.project.public_id if self.project is not None else self.scope
        return f"{scope}-history_{self.month}.jsonl" + (".gz" if self.compressed else "")


def archived_step(line: dict[str, Any]) -> str:
    """The step a ``workflow_step_completed`` record (an archive line) names, else ``""``: what a step name without
    an action of its own selects (``memory_app.choices.STEP_ACTIONS``)."""
    details = line.get("details")
    if line.get("action") != HistoryAction.WORKFLOW_STEP_COMPLETED or not isinstance(details, dict):
        return ""
    step = details.get("step")
    return step[:64] if isinstance(step, str) else ""


class HistoryArchivedCount(models.Model):
    """How many records of one action (and, for ``workflow_step_completed``, one step) an archive holds on one UTC
    day, with the first and last of their timestamps.

    Written with the archive's manifest, in the transaction that deletes the archived rows (the triggers then lower
    ``HistoryDailyCount``): the timeline counts a record the same before and after it is archived, without reading
    archive files, except for the partial days at the edges of a date range.
    """

    archive = models.ForeignKey(HistoryArchive, on_delete=models.CASCADE, related_name="counts")
    scope = models.CharField(max_length=64)  # the archive's scope, so a project's counts are one index range
    day = models.DateField()
    action = models.SlugField(max_length=64, db_index=False)
    step = models.CharField(max_length=64, blank=True, default="")
    record_count = models.PositiveIntegerField()
    first_timestamp = models.DateTimeField()
    last_timestamp = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["archive", "day", "action", "step"], name="history_archived_count_archive_day_action_step"
            )
        ]
        indexes = [models.Index(fields=["scope", "day"], name="history_archived_scope_day")]

    def __str__(self) -> str:
        return f"{self.scope} {self.day} {self.action} {self.step}: {self.record_count}".rstrip()
