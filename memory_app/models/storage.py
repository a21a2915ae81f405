"""The lifecycle of stored files: which projects used a file-cache entry, and file deletions still to do."""

from __future__ import annotations

from django.db import models


class ProjectCacheUse(models.Model):
    """A project used (wrote or read) one entry of a file-cache namespace (``images``). When the project is
    deleted, the entries no other live project used go with it; the rows go with the project (cascade)."""

    project = models.ForeignKey("memory_app.Project", on_delete=models.CASCADE, related_name="cache_uses")
    namespace = models.CharField(max_length=64)
    # The cache key as the cache package names it (the sha256 of the canonical JSON of the call) and the call's
    # key itself, which the cache's public ``cache_delete`` takes.
    digest = models.CharField(max_length=64)
    key = models.JSONField()
    first_used_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "namespace", "digest"], name="project_cache_use_unique")
        ]
        indexes = [models.Index(fields=["namespace", "digest"], name="project_cache_use_entry")]

    def __str__(self) -> str:
        return f"{self.project_id} used {self.namespace}:{self.digest[:12]}"


class StorageDeletionReason(models.TextChoices):
    PROJECT_DELETED = "project_deleted"
    OUTPUTS_EXPIRED = "outputs_expired"


class StorageDeletion(models.Model):
    """Files to remove, written in the transaction that made them unreferenced (a project deleted, a run's
    outputs expired). A task removes the files, then this row, last: a worker killed half-way leaves the row,
    and the beat sweep hands it to another task; every removal is idempotent."""

    reason = models.CharField(max_length=32, choices=StorageDeletionReason.choices)
    # The project's internal key, or the run's id: what the files belonged to (for logs and the admin).
    subject = models.CharField(max_length=64)
    # Storage names to delete, and folders whose whole tree goes (names inside the default Django storage).
    names = models.JSONField(default=list)
    folders = models.JSONField(default=list)
    # [{"namespace", "digest", "key"}]: file-cache entries to delete unless a live project used them meanwhile.
    cache_entries = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    attempted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.reason} {self.subject}"
