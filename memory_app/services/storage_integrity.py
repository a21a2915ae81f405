"""The integrity of the projects' files in storage (part of ``integrity_check``): orphan files, which nothing
live references, and missing files, which a live run references and storage does not hold.

Under ``projects/<key>/`` a file is an orphan when no live project has that key, or when it lies in
``images/<run>/`` and that run is gone, its outputs expired, or (once older than the grace) the run does not
name it. Under ``<history.archive_location>/<scope>/`` a scope that is no live project (and not the system's)
holds orphans. Other folders of a live project are not judged (other kinds of files live there). Files a
pending ``StorageDeletion`` names are its task's, not orphans. A repair removes orphans; a missing file cannot
be made again and is only reported.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from memory_app.models import SYSTEM_SCOPE, Project, StorageDeletion, WorkflowState
from memory_app.selectors.storage import PROJECTS_LOCATION, storage_tree, workflow_storage_names


@dataclass
class StorageProblem:
    kind: str  # orphan_file | missing_file
    subject: str
    detail: str
    repaired: bool = False


@dataclass
class StorageCheck:
    files: int = 0
    referenced: int = 0
    problems: list[StorageProblem] = field(default_factory=list)


def _young(name: str, cutoff: dt.datetime) -> bool:
    try:
        return default_storage.get_modified_time(name) > cutoff
    except (FileNotFoundError, NotImplementedError):
        return False


def _pending_deletion(name: str, deletions: list[StorageDeletion]) -> bool:
    return any(name in row.names or any(name.startswith(f"{folder}/") for folder in row.folders) for row in deletions)


def storage_files_check(*, repair: bool = False) -> StorageCheck:
    check = StorageCheck()
    live = set(Project.objects.values_list("pk", flat=True))
    runs: dict[tuple[str, str], bool] = {}  # (project key, run id) -> outputs still kept
    referenced: set[str] = set()
    for run in WorkflowState.objects.only("workflow_id", "project_id", "data", "outputs_expired_at").iterator():
        kept = run.outputs_expired_at is None
        runs[(run.project_id, str(run.pk))] = kept
        if kept:
            referenced.update(workflow_storage_names(workflow=run))
    deletions = list(StorageDeletion.objects.all())
    cutoff = timezone.now() - dt.timedelta(seconds=settings.MEMORY.cache_options.orphan_grace_seconds)

    def orphan(name: str, detail: str) -> None:
        if _pending_deletion(name, deletions):
            return
        problem = StorageProblem("orphan_file", name, detail)
        if repair:
            default_storage.delete(name)
            problem.repaired = True
        check.problems.append(problem)

    for name in storage_tree(PROJECTS_LOCATION):
        check.files += 1
        parts = name.split("/")
        if len(parts) < 3:
            orphan(name, "a file outside every project's folder")
        elif parts[1] not in live:
            orphan(name, f"no live project has the key {parts[1]}")
        elif len(parts) >= 4 and parts[2] == "images":
            run_kept = runs.get((parts[1], parts[3]))
            if run_kept is None:
                orphan(name, f"the run {parts[3]} of this project does not exist")
            elif not run_kept:
                orphan(name, f"the outputs of run {parts[3]} expired")
            elif name not in referenced and not _young(name, cutoff):
                orphan(name, f"the run {parts[3]} does not name this file")
    location = settings.MEMORY.history.archive_location
    for name in storage_tree(location):
        scope = name[len(location) + 1 :].split("/", 1)[0]
        if scope != SYSTEM_SCOPE and scope not in live:
            check.files += 1
            orphan(name, f"a history archive of {scope}, which is no live project")
    for name in sorted(referenced):
        check.referenced += 1
        if not default_storage.exists(name):
            check.problems.append(StorageProblem("missing_file", name, "a live run names it; storage does not hold it"))
    return check
