"""Operations (seed §7.1, §8, §9): metric snapshots, the memory optimizer, integrity checks.

The scheduled tasks (``memory_app.tasks``) and the commands call these; every run that changes something is
logged and, when it did something, recorded in history (project-less records). Stuck runs are the engine's
(``workflows/engine/recovery.py``).
"""

from __future__ import annotations

import datetime as dt
import gc
import gzip
import hashlib
import logging
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.core.files.storage import Storage, default_storage
from django.utils import timezone

from memory_app.blob_storage import CACHE_STORAGE, blob_storage
from memory_app.models import (
    SYSTEM_SCOPE,
    CacheEntry,
    HistoryAction,
    HistoryArchive,
    MetricSnapshot,
    Project,
    WorkflowSnapshot,
    WorkflowState,
    WorkflowUnit,
)
from memory_app.selectors.operations import (
    active_contexts_count,
    memory_usage,
    workflow_status_counts,
)
from memory_app.services.cache import (
    cache_cleanup,
    cache_counters_all,
    cache_memory_usage,
    cache_namespace_location,
)
from memory_app.services.conversation import ReleaseReport, contexts_release
from memory_app.services.history import (
    ArchiveVerificationFailed,
    history_archive_read,
    history_archive_run,
    history_archive_sweep,
    history_record,
)
from memory_app.services.storage_integrity import storage_files_check
from memory_app.tokens import token_counters_release

logger = logging.getLogger("memory_app.operations")


# --- metric snapshots (§9.2's material) ---------------------------------------------------------------------


def metric_snapshot_take() -> MetricSnapshot:
    """Store the current figures; the cache counters are cumulative, the analysis works on differences."""
    usage = memory_usage()
    cache: dict[str, dict[str, Any]] = {}
    for namespace, counts in cache_counters_all().items():
        config = settings.MEMORY.cache[namespace]
        if config.backend == "file":
            size = CacheEntry.objects.filter(namespace=namespace).count()
        else:
            size = cache_memory_usage(namespace=namespace).entries
        cache[namespace] = {"hits": counts["hits"], "misses": counts["misses"], "current_size": size}
    return MetricSnapshot.objects.create(
        taken_at=timezone.now(),
        memory_total=usage["total"],
        memory_used=usage["used"],
        memory_percentage=usage["percentage"],
        active_contexts=active_contexts_count(),
        cache=cache,
        workflow_states=workflow_status_counts(),
    )


def metric_snapshots_prune(*, now: dt.datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.MEMORY.monitoring.snapshot_retention_days)
    deleted, _ = MetricSnapshot.objects.filter(taken_at__lt=cutoff).delete()
    return deleted


# --- §7.1 memory optimizer ------------------------------------------------------------------------------------


def contexts_release_inactive(*, release_contexts: bool = True) -> dict[str, Any]:
    """Release inactive contexts and those beyond ``conversation.max_active_contexts`` (exported to storage, then
    removed: ``memory_app.services.conversation.release``), and what this process holds.

    No process keeps conversation contexts in memory: every read goes to the database. What a process does hold
    is released too: the tokenizer cache (the loaded tokenizer files) and the garbage of finished requests.
    Without ``release_contexts`` only the process's memory is released (the contexts stay).
    """
    release = contexts_release() if release_contexts else ReleaseReport()
    return {
        "inactive_contexts": release.inactive_contexts,
        "over_limit_contexts": release.over_limit_contexts,
        "released_contexts": len(release.released),
        "kept_written_meanwhile": len(release.kept_written_meanwhile),
        "release_failed": len(release.failed),
        "contexts_held_in_process": 0,
        "tokenizers_released": token_counters_release(),
        "objects_collected": gc.collect(),
    }


@dataclass
class OptimizeReport:
    memory_percentage: float
    threshold_percentage: float
    acted: bool
    cache: dict[str, Any] | None = None
    history_archived: int | None = None
    contexts: dict[str, Any] | None = None
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def memory_optimize() -> OptimizeReport:
    """Above ``monitoring.memory_threshold``: clean expired caches, archive old history, release contexts.

    Cleanup, archiving and the release of contexts are cleanup tasks: with ``maintenance.auto_cleanup_enabled``
    false they are skipped (and the report says so); releasing process memory always happens above the threshold.
    """
    usage = memory_usage()["percentage"]
    threshold = settings.MEMORY.monitoring.memory_threshold * 100
    report = OptimizeReport(memory_percentage=usage, threshold_percentage=threshold, acted=usage > threshold)
    if not report.acted:
        return report
    if settings.MEMORY.maintenance.auto_cleanup_enabled:
        report.cache = cache_cleanup().as_dict()
        report.history_archived = history_archive_run(
            max_batches=settings.MEMORY.history.archive_batches_per_task
        ).records_archived
    else:
        report.skipped = ["cache_cleanup", "history_archive", "contexts_release"]
    report.contexts = contexts_release_inactive(release_contexts=settings.MEMORY.maintenance.auto_cleanup_enabled)
    logger.warning("memory at %.1f%% (threshold %.0f%%): optimizer ran: %s", usage, threshold, report.as_dict())
    history_record(
        project=None,
        action=HistoryAction.MEMORY_OPTIMIZED,
        summary=f"Memory at {usage:.1f}% (over {threshold:.0f}%): expired caches cleaned, old history archived, "
        "inactive contexts released.",
        details=report.as_dict(),
    )
    return report


# --- §8.1 integrity check ------------------------------------------------------------------------------------


@dataclass
class IntegrityProblem:
    kind: str
    subject: str
    detail: str
    repaired: bool = False


@dataclass
class IntegrityReport:
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[IntegrityProblem] = field(default_factory=list)

    @property
    def unrepaired(self) -> list[IntegrityProblem]:
        return [problem for problem in self.problems if not problem.repaired]

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "problems": [asdict(problem) for problem in self.problems]}


def _sha256_blob(storage: Storage, name: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with storage.open(name, "rb") as handle:
            for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(chunk)
    except OSError:  # FileNotFoundError included
        return None
    return digest.hexdigest()


def _check_cache_blobs(report: IntegrityReport, repair: bool) -> None:
    """Both directions, in the ``cache`` storage (local folder or bucket): every entry has its blob with the right
    checksum; every blob has its entry."""
    grace = settings.MEMORY.cache_options.orphan_grace_seconds
    storage = blob_storage(CACHE_STORAGE)
    entries = blobs = 0
    for namespace, config in settings.MEMORY.cache.items():
        if config.backend != "file":
            continue
        location = cache_namespace_location(namespace=namespace)
        known: set[str] = set()
        for entry in CacheEntry.objects.filter(namespace=namespace).iterator():
            entries += 1
            known.add(entry.blob_name)
            name = f"{location}/{entry.blob_name[:2]}/{entry.blob_name}"
            checksum = _sha256_blob(storage, name)
            if checksum == entry.checksum:
                continue
            detail = "its blob is missing" if checksum is None else "its blob does not match the checksum"
            problem = IntegrityProblem("cache_entry_without_blob", f"{namespace}:{entry.key}", detail)
            if repair:
                # A cache is derived data: dropping the entry makes the next lookup a miss that recomputes it.
                CacheEntry.objects.filter(pk=entry.pk, checksum=entry.checksum).delete()
                storage.delete(name)
                problem.repaired = True
            report.problems.append(problem)
        try:
            shards, _files = storage.listdir(location)
        except FileNotFoundError:
            continue
        oldest_allowed = timezone.now() - dt.timedelta(seconds=grace)
        for shard in shards:
            if shard.startswith("."):
                continue  # the local staging folder: cache cleanup sweeps it
            try:
                _folders, names = storage.listdir(f"{location}/{shard}")
            except FileNotFoundError:
                continue
            for blob_name in names:
                blobs += 1
                if blob_name in known:
                    continue
                name = f"{location}/{shard}/{blob_name}"
                try:
                    if storage.get_modified_time(name) > oldest_allowed:
                        # Young: its writer may be between saving the blob and inserting its row.
                        continue
                except FileNotFoundError:
                    continue  # removed meanwhile (cleanup, eviction)
                if CacheEntry.objects.filter(namespace=namespace, blob_name=blob_name).exists():
                    continue
                problem = IntegrityProblem("cache_blob_without_entry", f"{namespace}:{blob_name}", "no entry names it")
                if repair:
                    storage.delete(name)
                    problem.repaired = True
                report.problems.append(problem)
    report.checked["cache_entries"] = entries
    report.checked["cache_blobs"] = blobs


def _read_candidate(name: str) -> bytes | None:
    try:
        with default_storage.open(name, "rb") as handle:
            raw: bytes = handle.read()
    except OSError:
        return None
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        return raw


def _relocate_archive(archive: HistoryArchive) -> str | None:
    """A file of the same scope and month whose content matches the manifest (checksum and count), if any."""
    folder = f"{settings.MEMORY.history.archive_location}/{archive.scope}"
    try:
        _, files = default_storage.listdir(folder)
    except FileNotFoundError:
        return None
    for file_name in sorted(files):
        name = f"{folder}/{file_name}"
        if name == archive.file_name or not file_name.startswith(f"history_{archive.month}"):
            continue
        data = _read_candidate(name)
        if data is None:
            continue
        if hashlib.sha256(data).hexdigest() == archive.checksum and data.count(b"\n") == archive.record_count:
            return name
    return None


def _check_history_archives(report: IntegrityReport, repair: bool) -> None:
    checked = 0
    for archive in HistoryArchive.objects.filter(record_count__gt=0).order_by("scope", "month"):
        checked += 1
        try:
            history_archive_read(archive=archive)
            continue
        except ArchiveVerificationFailed as exc:
            problem = IntegrityProblem("history_archive_mismatch", f"{archive.scope} {archive.month}", exc.message)
        if repair:
            found = _relocate_archive(archive)
            if found is not None:
                # The records are intact under another name (moved, renamed by the storage, or left by a crash
                # between the write and the manifest update): point the manifest at them.
                compressed = found.endswith(".gz")
                with default_storage.open(found, "rb") as handle:
                    size = len(handle.read())
                HistoryArchive.objects.filter(pk=archive.pk, file_name=archive.file_name).update(
                    file_name=found, compressed=compressed, size_bytes=size
                )
                problem.repaired = True
                problem.detail += f" Repointed to {found}, which matches the manifest."
            else:
                problem.detail += " No intact copy exists: restore the file from a backup."
        report.problems.append(problem)
    report.checked["history_archives"] = checked
    # Unfinished archive moves: files written by a batch that never committed, or superseded files whose
    # deletion a crash interrupted. No manifest names them.
    location = settings.MEMORY.history.archive_location
    named = set(HistoryArchive.objects.exclude(file_name="").values_list("file_name", flat=True))
    leftovers = []
    try:
        scopes, _ = default_storage.listdir(location)
    except FileNotFoundError:
        scopes = []
    live = set(Project.objects.values_list("pk", flat=True))
    for scope in scopes:
        if scope != SYSTEM_SCOPE and scope not in live:
            continue  # a deleted project's archives: orphan files (the storage check)
        _, files = default_storage.listdir(f"{location}/{scope}")
        leftovers += [f"{location}/{scope}/{name}" for name in files if f"{location}/{scope}/{name}" not in named]
    if leftovers:
        removed = history_archive_sweep() if repair else 0
        for name in leftovers:
            report.problems.append(
                IntegrityProblem(
                    "unfinished_archive_move",
                    name,
                    "an archive file no manifest names (a batch that did not commit, or a superseded file)",
                    repaired=repair and removed > 0 and not default_storage.exists(name),
                )
            )


def _check_workflow_rows(report: IntegrityReport, repair: bool) -> None:
    """Snapshots and units whose run is gone (foreign keys make this rare: a restore of a partial dump, a
    manual delete with constraints off)."""
    runs = WorkflowState.objects.values("pk")
    for model, kind in ((WorkflowSnapshot, "snapshot_without_run"), (WorkflowUnit, "unit_without_run")):
        # order_by(): the default ordering joins the run table, which would hide exactly the rows we look for.
        orphans = list(model.objects.order_by().exclude(workflow_id__in=runs).values_list("pk", "workflow_id"))
        report.checked[f"{kind.split('_')[0]}s"] = model.objects.count()
        if orphans and repair:
            model.objects.filter(pk__in=[pk for pk, _ in orphans]).delete()
        report.problems += [
            IntegrityProblem(kind, f"{model.__name__} {pk}", f"run {workflow_id} does not exist", repaired=repair)
            for pk, workflow_id in orphans
        ]


def _check_storage_files(report: IntegrityReport, repair: bool) -> None:
    """Orphan and missing files of the projects (``storage_integrity``); before the archives' check, so the
    archives of a deleted project are judged (and removed) here as orphans."""
    check = storage_files_check(repair=repair)
    report.checked["project_files"] = check.files
    report.checked["referenced_files"] = check.referenced
    report.problems += [
        IntegrityProblem(problem.kind, problem.subject, problem.detail, problem.repaired) for problem in check.problems
    ]


def integrity_check(*, repair: bool = False) -> IntegrityReport:
    """Verify cache blobs, history archives and the workflow tables; with ``repair``, fix what can be fixed."""
    report = IntegrityReport()
    _check_cache_blobs(report, repair)
    _check_storage_files(report, repair)
    _check_history_archives(report, repair)
    _check_workflow_rows(report, repair)
    if report.problems:
        unrepaired = len(report.unrepaired)
        logger.warning("integrity check: %d problem(s), %d unrepaired", len(report.problems), unrepaired)
        history_record(
            project=None,
            action=HistoryAction.INTEGRITY_CHECKED,
            summary=f"Integrity check: {len(report.problems)} problem(s) found, {unrepaired} left unrepaired.",
            details=report.as_dict(),
        )
    return report
