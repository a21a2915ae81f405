"""Retention and archiving: records past ``retention_days`` or beyond ``max_history_per_project`` move, batch by
batch, into one verified archive file per scope and month; sweeping and verifying the archives."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from memory_app.models import SYSTEM_SCOPE, HistoryAction, HistoryArchive, HistoryRecord, Project
from memory_app.services.history.archive_files import (
    ArchiveVerificationFailed,
    _encode_lines,
    _line_order,
    _month_bounds,
    _remove_leftovers,
    _write_verified,
    history_archive_counts_rebuild,
    history_archive_read,
    history_record_to_json,
)
from memory_app.services.history.record import history_record


@dataclass(frozen=True)
class ArchiveBatchResult:
    scope: str
    month: str
    archived: int
    archive: HistoryArchive


@dataclass(frozen=True)
class ArchiveRunResult:
    batches: int
    records_archived: int
    more: bool


def _cap_key(*, project_id: str) -> tuple[dt.datetime, int] | None:
    """(timestamp, id) of the newest record beyond ``max_history_per_project``, or None when under the cap.

    ``history_archived`` records do not count toward the cap: otherwise every archive run would push the project
    over it again by the record it writes.
    """
    cap = settings.MEMORY.history.max_history_per_project
    row = (
        HistoryRecord.objects.filter(project_id=project_id)
        .exclude(action=HistoryAction.HISTORY_ARCHIVED)
        .order_by("-timestamp", "-id")
        .values_list("timestamp", "id")[cap : cap + 1]
    )
    found = list(row)
    return found[0] if found else None


def _eligible(*, project_id: str | None, cutoff: dt.datetime) -> QuerySet[HistoryRecord]:
    queryset = (
        HistoryRecord.objects.filter(project__isnull=True)
        if project_id is None
        else HistoryRecord.objects.filter(project_id=project_id)
    )
    condition = Q(timestamp__lt=cutoff)
    key = _cap_key(project_id=project_id) if project_id is not None else None
    if key is not None:
        condition |= Q(timestamp__lt=key[0]) | Q(timestamp=key[0], id__lte=key[1])
    return queryset.filter(condition)


def _next_candidate(*, cutoff: dt.datetime) -> HistoryRecord | None:
    """The oldest record due for archiving: past retention first, then the oldest of a project over the cap."""
    oldest: HistoryRecord | None = (
        HistoryRecord.objects.filter(timestamp__lt=cutoff).order_by("timestamp", "id").first()
    )
    if oldest is not None:
        return oldest
    over_cap = (
        HistoryRecord.objects.filter(project__isnull=False)
        .exclude(action=HistoryAction.HISTORY_ARCHIVED)
        .order_by()
        .values("project_id")
        .annotate(count=Count("id"))
        .filter(count__gt=settings.MEMORY.history.max_history_per_project)
        .order_by("project_id")
        .first()
    )
    if over_cap is None:
        return None
    first: HistoryRecord | None = (
        HistoryRecord.objects.filter(project_id=over_cap["project_id"]).order_by("timestamp", "id").first()
    )
    return first


def history_archive_batch(
    *, now: dt.datetime | None = None, batch_size: int | None = None
) -> ArchiveBatchResult | None:
    """Archive up to ``batch_size`` due records of one project and month; None when nothing is due.

    Order of effects, all under a lock on the month's manifest row:
    1. the month's archive is rebuilt as the records it already holds (verified) plus this batch, and written
       under a content-addressed name, then read back and checked (checksum, count);
    2. in the same transaction the manifest is pointed at the new file and the batch's rows are deleted.
    A crash before 2 commits leaves the rows and the old manifest: the new file is a leftover that the re-run
    rewrites or removes, so every record stays exactly once across database and archives.
    """
    config = settings.MEMORY.history
    now = now or timezone.now()
    batch_size = batch_size or config.archive_batch_size
    cutoff = now - dt.timedelta(days=config.retention_days)
    candidate = _next_candidate(cutoff=cutoff)
    if candidate is None:
        return None
    project_id = candidate.project_id
    scope = project_id or SYSTEM_SCOPE
    month, month_start, month_end = _month_bounds(candidate.timestamp)
    folder = f"{config.archive_location}/{scope}"
    previous_file = ""
    with transaction.atomic():
        archive, _ = HistoryArchive.objects.get_or_create(
            scope=scope,
            month=month,
            defaults={"project_id": project_id, "compressed": config.compression_enabled, "checksum": ""},
        )
        # Two runs never archive the same month at once: the second waits here, then finds the rows gone.
        archive = HistoryArchive.objects.select_for_update().get(pk=archive.pk)
        batch = list(
            _eligible(project_id=project_id, cutoff=cutoff)
            .filter(timestamp__gte=month_start, timestamp__lt=month_end)
            .order_by("timestamp", "id")[:batch_size]
        )
        if not batch:
            return ArchiveBatchResult(scope=scope, month=month, archived=0, archive=archive)
        existing = history_archive_read(archive=archive)
        known_ids = {line["id"] for line in existing}
        lines = existing + [history_record_to_json(record) for record in batch if record.pk not in known_ids]
        lines.sort(key=_line_order)
        data = _encode_lines(lines)
        checksum = hashlib.sha256(data).hexdigest()
        compressed = config.compression_enabled
        name = f"{folder}/history_{month}-{checksum[:16]}.jsonl" + (".gz" if compressed else "")
        _remove_leftovers(folder=folder, month=month, keep=archive.file_name)
        name, size = _write_verified(name=name, data=data, compressed=compressed, expected_count=len(lines))

        previous_file = archive.file_name if archive.file_name != name else ""
        archive.file_name = name
        archive.compressed = compressed
        archive.checksum = checksum
        archive.size_bytes = size
        archive.record_count = len(lines)
        archive.first_record_id = min(line["id"] for line in lines)
        archive.last_record_id = max(line["id"] for line in lines)
        archive.first_timestamp = dt.datetime.fromisoformat(lines[0]["timestamp"])
        archive.last_timestamp = dt.datetime.fromisoformat(lines[-1]["timestamp"])
        archive.save()
        history_archive_counts_rebuild(archive=archive, lines=lines)
        # Their index rows go with them (cascade): count the records alone.
        _, per_model = HistoryRecord.objects.filter(pk__in=[record.pk for record in batch]).delete()
        deleted = per_model.get(HistoryRecord._meta.label, 0)
        history_record(
            project=candidate.project,
            action=HistoryAction.HISTORY_ARCHIVED,
            summary=f"{deleted} history records of {month[:4]}-{month[4:]} archived.",
            details={"month": month, "archived": deleted, "archive_id": archive.pk, "in_archive": len(lines)},
        )
        if previous_file:
            # The superseded file goes only once the new manifest is committed.
            transaction.on_commit(lambda: default_storage.delete(previous_file))
    return ArchiveBatchResult(scope=scope, month=month, archived=deleted, archive=archive)


_ARCHIVE_FILE = re.compile(r"^history_(\d{6})-[0-9a-f]{16}\.jsonl(\.gz)?$")


def history_archive_sweep() -> int:
    """Remove archive files no manifest names; returns how many were removed.

    They are left when a process dies after its batch committed but before the superseded file was deleted,
    or before a batch committed. Each month is swept under its manifest's lock (created empty when missing, so
    a first batch that is writing right now is waited for), so a file that is about to be named is never lost.
    """
    location = settings.MEMORY.history.archive_location
    try:
        scopes, _ = default_storage.listdir(location)
    except FileNotFoundError:
        return 0
    removed = 0
    live = set(Project.objects.filter(pk__in=scopes).values_list("pk", flat=True))
    for scope in scopes:
        if scope != SYSTEM_SCOPE and scope not in live:
            continue  # a deleted project's: its files are its deletion's (storage_lifecycle), no manifest's
        folder = f"{location}/{scope}"
        _, files = default_storage.listdir(folder)
        months = {match.group(1) for match in map(_ARCHIVE_FILE.match, files) if match}
        for month in sorted(months):
            with transaction.atomic():
                archive, _ = HistoryArchive.objects.get_or_create(
                    scope=scope,
                    month=month,
                    defaults={"project_id": None if scope == SYSTEM_SCOPE else scope, "checksum": ""},
                )
                archive = HistoryArchive.objects.select_for_update().get(pk=archive.pk)
                removed += _remove_leftovers(folder=folder, month=month, keep=archive.file_name)
    return removed


def history_archive_verify_all() -> list[str]:
    """Read every archive back and compare it with its manifest; one message per archive that does not match."""
    problems = []
    for archive in HistoryArchive.objects.filter(record_count__gt=0).order_by("scope", "month"):
        try:
            history_archive_read(archive=archive)
        except ArchiveVerificationFailed as exc:
            problems.append(f"{archive.scope} {archive.month}: {exc.message}")
    return problems


def history_archive_files_forget(*, project: Project) -> None:
    """Delete the project's archive files from storage after the current transaction commits (project deletion)."""
    names = [
        name for name in HistoryArchive.objects.filter(project=project).values_list("file_name", flat=True) if name
    ]

    def delete_files() -> None:
        for name in names:
            default_storage.delete(name)

    transaction.on_commit(delete_files)


def history_archive_run(
    *, now: dt.datetime | None = None, max_batches: int | None = None, batch_size: int | None = None
) -> ArchiveRunResult:
    """Archive batch after batch until nothing is due or ``max_batches`` were done; ``more`` says which."""
    batches = archived = lost_races = 0
    while max_batches is None or batches < max_batches:
        result = history_archive_batch(now=now, batch_size=batch_size)
        if result is None:
            return ArchiveRunResult(batches=batches, records_archived=archived, more=False)
        if result.archived == 0:
            # Another run archived this month's batch while we waited for its lock: look again, a few times.
            lost_races += 1
            if lost_races > 3:
                break
            continue
        batches += 1
        archived += result.archived
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.MEMORY.history.retention_days)
    return ArchiveRunResult(batches=batches, records_archived=archived, more=_next_candidate(cutoff=cutoff) is not None)
