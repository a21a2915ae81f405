"""Where a project's files live in storage, and which stored files belong to what (the read side of the file
lifecycle: ``memory_app.services.storage_lifecycle`` deletes, ``integrity_check`` compares).

A project's files live under its internal key (``Project.pk``, which nobody chooses), never under the id its
owner chose: ``projects/<key>/images/<run id>/…`` for a run's outputs, ``<history.archive_location>/<key>/…`` for
its history archives. A later project with the same public id, by anyone, has another key and starts empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.storage import default_storage

from memory_app.models import HistoryArchive, Project, ProjectCacheUse, WorkflowState
from memory_app.selectors.characters import project_reference_storage_names
from memory_app.selectors.workflow import workflow_output_files

PROJECTS_LOCATION = "projects"


def project_folder(project_key: str) -> str:
    """The storage folder of a project's own files (its internal key, a validated id: safe as a path part)."""
    return f"{PROJECTS_LOCATION}/{project_key}"


def workflow_output_folder(project_key: str, workflow_id: str) -> str:
    return f"{project_folder(project_key)}/images/{workflow_id}"


def workflow_storage_names(*, workflow: WorkflowState) -> list[str]:
    """The storage names a run recorded: its outputs (panels, pages, finished units' panels) and the stored copy
    of its ``previous_context`` image."""
    names = set(workflow_output_files(workflow=workflow).values())
    used = (workflow.data or {}).get("previous_context_used")
    if isinstance(used, dict) and isinstance(used.get("stored_as"), str):
        names.add(used["stored_as"])
    return sorted(names)


@dataclass
class ProjectFiles:
    """What goes from storage when a project goes: named files, and folders whose whole tree goes."""

    names: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)


def project_storage_names(*, project: Project) -> ProjectFiles:
    """Every storage name a project holds. Another kind of file (character references, uploads) is one more
    list added here; the deletion takes whatever this returns."""
    names: set[str] = set()
    for run in WorkflowState.objects.filter(project=project).only("workflow_id", "data"):
        names.update(workflow_storage_names(workflow=run))
    names.update(name for name in HistoryArchive.objects.filter(project=project).values_list("file_name", flat=True))
    # Reference images are content-addressed and may be shared: only those no other project's character uses.
    names.update(project_reference_storage_names(project_id=project.pk))
    names.discard("")
    folders = [project_folder(project.pk), f"{settings.MEMORY.history.archive_location}/{project.pk}"]
    return ProjectFiles(names=sorted(names), folders=folders)


def project_cache_entries_exclusive(*, project: Project) -> list[dict[str, object]]:
    """The file-cache entries ``project`` used that no other live project used: ``{namespace, digest, key}``."""
    uses = ProjectCacheUse.objects.filter(project=project)
    shared = ProjectCacheUse.objects.exclude(project=project).filter(
        namespace__in=uses.values("namespace"), digest__in=uses.values("digest")
    )
    shared_pairs = set(shared.values_list("namespace", "digest"))
    return [
        {"namespace": namespace, "digest": digest, "key": key}
        for namespace, digest, key in uses.order_by("id").values_list("namespace", "digest", "key")
        if (namespace, digest) not in shared_pairs
    ]


def cache_entry_used_by_live_project(*, namespace: str, digest: str) -> bool:
    return ProjectCacheUse.objects.filter(namespace=namespace, digest=digest).exists()


def storage_tree(folder: str) -> Iterator[str]:
    """Every file name under ``folder`` in the default storage (nothing when the folder does not exist)."""
    try:
        directories, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in files:
        yield f"{folder}/{name}"
    for directory in directories:
        yield from storage_tree(f"{folder}/{directory}")
