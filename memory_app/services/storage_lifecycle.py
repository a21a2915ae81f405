"""The lifecycle of stored files: a deleted project's files go, old outputs expire, the cache entries only a
deleted project used go with it.

Every removal is written down first, as a ``StorageDeletion`` row in the transaction that made the files
unreferenced (the project's delete, the run's expiry), and done after that commits by the
``memory_app.storage_deletion`` task, which removes the files, then the row, last. A worker killed half-way
leaves the row; the beat sweep (``storage_deletions_due``) hands it to a new task, which removes what is left:
deleting a file that is gone already is no error, so a redelivered or doubled task does no harm.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError

from memory_app.errors import NotFound
from memory_app.models import (
    Project,
    ProjectCacheUse,
    StorageDeletion,
    StorageDeletionReason,
    WorkflowState,
    WorkflowStatus,
)
from memory_app.selectors.storage import (
    cache_entry_used_by_live_project,
    project_cache_entries_exclusive,
    project_storage_names,
    storage_tree,
    workflow_output_folder,
    workflow_storage_names,
)
from memory_app.services.cache import cache_delete, cache_key

logger = logging.getLogger("memory_app.storage")

DELETION_TASK = "memory_app.storage_deletion"
# Runs whose outputs may expire: finished ones (a run still going keeps writing into its folder).
FINISHED = (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)


# --- which projects used a file-cache entry ----------------------------------------------------------------


def project_cache_use_record(*, project_key: str, namespace: str, key: Any, generated: bool = False) -> None:
    """Note that the project used the entry ``key`` of ``namespace`` (it drew it, or read it from the cache).

    ``generated``: the value was just computed, so the project has almost never noted this key yet: the note is
    inserted without looking first (one statement fewer per panel); a note there already is refused by the unique
    constraint and ignored, as when two units race."""
    digest = cache_key(namespace=namespace, key=key)
    if (
        not generated
        and ProjectCacheUse.objects.filter(project_id=project_key, namespace=namespace, digest=digest).exists()
    ):
        return
    try:
        with transaction.atomic():
            # The project's row, locked: a delete waits for this insert (or went first, and then there is no
            # project to note the use for). Checked here, since SQLite checks foreign keys only at commit.
            if not Project.objects.select_for_update(no_key=True).filter(pk=project_key).exists():
                return
            ProjectCacheUse.objects.create(project_id=project_key, namespace=namespace, digest=digest, key=key)
    except IntegrityError:
        # Recorded meanwhile by another unit of the project, or the project was deleted meanwhile (then its
        # deletion already decided about this entry, and an entry left behind is only a cache entry).
        return


# --- writing deletions down ----------------------------------------------------------------------------------


def _send_on_commit(deletion_id: int) -> None:
    def send() -> None:
        # By the registered task when this process has it (so an eager configuration runs it inline), by name
        # otherwise (memory_app.tasks imports this module: it cannot be imported here).
        task = current_app.tasks.get(DELETION_TASK)
        try:
            if task is not None:
                task.apply_async(args=(deletion_id,))
            else:
                current_app.send_task(DELETION_TASK, args=(deletion_id,))
        except (OperationalError, OSError):
            # The row stays: the beat sweep sends it again once the broker answers.
            logger.warning("storage deletion %s not sent; the sweep will send it", deletion_id, exc_info=True)

    transaction.on_commit(send)


def project_files_release(*, project: Project) -> StorageDeletion:
    """Write down what goes from storage with ``project`` (call it in the transaction that deletes it): every
    storage name it holds, its folders, and the file-cache entries no other live project used."""
    files = project_storage_names(project=project)
    deletion = StorageDeletion.objects.create(
        reason=StorageDeletionReason.PROJECT_DELETED,
        subject=project.pk,
        names=files.names,
        folders=files.folders,
        cache_entries=project_cache_entries_exclusive(project=project),
    )
    _send_on_commit(deletion.pk)
    return deletion


@dataclass(frozen=True)
class ExpiryResult:
    runs: int
    more: bool

    def as_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "more": self.more}


def workflow_outputs_expire(*, now: dt.datetime | None = None, batch_size: int = 200) -> ExpiryResult:
    """Expire the outputs of finished runs last changed more than ``pipelines.output_retention_days`` ago:
    mark the runs and write their files down for deletion, in one transaction. One batch per call."""
    days = settings.MEMORY.pipelines.output_retention_days
    if not days:
        return ExpiryResult(runs=0, more=False)
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=days)
    due = WorkflowState.objects.filter(status__in=FINISHED, updated_at__lt=cutoff, outputs_expired_at__isnull=True)
    with transaction.atomic():
        runs = list(due.select_for_update(skip_locked=True).order_by("updated_at")[:batch_size])
        if not runs:
            return ExpiryResult(runs=0, more=False)
        names: set[str] = set()
        for run in runs:
            names.update(workflow_storage_names(workflow=run))
        # update() leaves updated_at alone: the run itself did not change.
        WorkflowState.objects.filter(pk__in=[run.pk for run in runs]).update(outputs_expired_at=now)
        deletion = StorageDeletion.objects.create(
            reason=StorageDeletionReason.OUTPUTS_EXPIRED,
            subject=f"{len(runs)} runs",
            names=sorted(names),
            folders=[workflow_output_folder(run.project_id, str(run.pk)) for run in runs],
        )
        _send_on_commit(deletion.pk)
    logger.info("outputs of %d runs expired (deletion %s)", len(runs), deletion.pk)
    return ExpiryResult(runs=len(runs), more=len(runs) == batch_size)


# --- doing them ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionResult:
    deletion_id: int
    files: int
    cache_entries: int
    kept_cache_entries: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "deletion": self.deletion_id,
            "files": self.files,
            "cache_entries": self.cache_entries,
            "kept_cache_entries": self.kept_cache_entries,
        }


def _remove_empty_folders(folder: str) -> None:
    """Local storage keeps empty directories; remove the folder's if it is empty now (a remote store has none)."""
    try:
        root = Path(default_storage.path(folder))
    except NotImplementedError:
        return
    if not root.is_dir():
        return
    for directory, _, _ in sorted(os.walk(root), key=lambda item: -len(item[0])):
        try:
            os.rmdir(directory)
        except OSError:
            continue  # not empty: a file arrived meanwhile


def _delete_file(name: str) -> int:
    if not default_storage.exists(name):
        return 0
    default_storage.delete(name)
    return 1


def storage_deletion_process(*, deletion_id: int) -> DeletionResult | None:
    """Remove what the deletion names, then the row; None when the row is gone (done by another task)."""
    deletion = StorageDeletion.objects.filter(pk=deletion_id).first()
    if deletion is None:
        return None
    StorageDeletion.objects.filter(pk=deletion_id).update(attempts=F("attempts") + 1, attempted_at=timezone.now())
    files = sum(_delete_file(name) for name in deletion.names)
    # A project's folders are its key's; a key is never reused, but if a live project holds it (a restored
    # backup), only the named files go.
    reused = Project.objects.filter(pk=deletion.subject).exists()
    folders_owned = not (deletion.reason == StorageDeletionReason.PROJECT_DELETED and reused)
    for folder in deletion.folders if folders_owned else []:
        files += sum(_delete_file(name) for name in list(storage_tree(folder)))
        _remove_empty_folders(folder)
    removed = kept = 0
    for entry in deletion.cache_entries:
        namespace, digest = str(entry["namespace"]), str(entry["digest"])
        if cache_entry_used_by_live_project(namespace=namespace, digest=digest):
            kept += 1  # another project used it since the deletion was written down
            continue
        try:
            removed += cache_delete(namespace=namespace, key=entry["key"])
        except NotFound:
            continue  # the namespace is no longer configured: nothing of it is kept
    StorageDeletion.objects.filter(pk=deletion_id).delete()
    result = DeletionResult(deletion_id=deletion_id, files=files, cache_entries=removed, kept_cache_entries=kept)
    logger.info("storage deletion %s (%s %s) done: %s", deletion_id, deletion.reason, deletion.subject, result)
    return result


def storage_deletions_due(*, now: dt.datetime | None = None) -> list[int]:
    """Deletions older than ``maintenance.storage_deletion_grace_seconds`` whose last attempt (if any) is that
    old too: left by a worker that died, or never sent. The sweep sends each again."""
    cutoff = (now or timezone.now()) - dt.timedelta(seconds=settings.MEMORY.maintenance.storage_deletion_grace_seconds)
    rows = StorageDeletion.objects.filter(created_at__lt=cutoff).exclude(attempted_at__gte=cutoff)
    return list(rows.order_by("created_at", "id").values_list("pk", flat=True)[:500])
