"""Project history: the one service every layer records through (seed §3)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import re
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from memory_app.errors import ComicmemError, ValidationFailed
from memory_app.logging import current_request_id
from memory_app.models import (
    DEFAULT_SUMMARIES,
    SYSTEM_SCOPE,
    HistoryAction,
    HistoryArchive,
    HistoryRecord,
    Project,
)
from memory_app.redaction import redact


def history_record(
    *,
    project: Project | None,
    action: str,
    details: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
    summary: str | None = None,
    workflow_id: uuid.UUID | str | None = None,
) -> HistoryRecord:
    """Append one record: a single INSERT, whatever the size of the history.

    ``project`` is None only for system-wide events (a cache namespace cleared by staff).

    Details are redacted (sensitive keys at any depth, oversized values cut with a marker) before they are
    stored. Called inside a transaction, the record commits or rolls back with it.
    """
    try:
        action = HistoryAction(action).value
    except ValueError:
        raise ValidationFailed(
            f"Unknown history action '{action}'.", details={"fields": {"action": ["Not in the action vocabulary."]}}
        ) from None
    config = settings.MEMORY.history
    clean_details = redact(
        details or {}, extra_names=config.redact_extra_fields, max_chars=config.max_detail_value_chars
    )
    request_id = current_request_id.get()
    return HistoryRecord.objects.create(
        project=project,
        timestamp=timezone.now(),
        action=action,
        summary=(summary or DEFAULT_SUMMARIES.get(action, action.replace("_", " ").capitalize() + "."))[:500],
        details=clean_details,
        user=user if user is not None and user.is_authenticated else None,
        request_id="" if request_id == "-" else request_id,
        workflow_id=workflow_id,
    )


# --- retention and archives -------------------------------------------------------------------------------------


class ArchiveVerificationFailed(ComicmemError):
    """An archive file read back does not hold what was written (or what its manifest says): nothing is deleted."""

    default_message = "A history archive failed verification."


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


def _month_bounds(timestamp: dt.datetime) -> tuple[str, dt.datetime, dt.datetime]:
    start = timestamp.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return f"{start:%Y%m}", start, end


def history_record_to_json(record: HistoryRecord) -> dict[str, Any]:
    """The line of an archive file: every field, in a form that reads back into the same record."""
    return {
        "id": record.pk,
        "project_id": record.project_id,
        "timestamp": record.timestamp.astimezone(dt.UTC).isoformat(),
        "action": record.action,
        "summary": record.summary,
        "details": record.details,
        "user_id": record.user_id,
        "request_id": record.request_id,
        "workflow_id": str(record.workflow_id) if record.workflow_id else None,
    }


def _line_order(line: dict[str, Any]) -> tuple[dt.datetime, int]:
    return dt.datetime.fromisoformat(line["timestamp"]), line["id"]


def _encode_lines(lines: list[dict[str, Any]]) -> bytes:
    # Canonical JSON, so the same records always give the same bytes, the same checksum and the same file name.
    return b"".join(
        json.dumps(line, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for line in lines
    )


def _read_archive(*, name: str, compressed: bool) -> bytes:
    with default_storage.open(name, "rb") as handle:
        raw = handle.read()
    return gzip.decompress(raw) if compressed else raw


def history_archive_read(*, archive: HistoryArchive) -> list[dict[str, Any]]:
    """The records of an archive, verified against its manifest (checksum and count)."""
    if not archive.file_name:
        return []
    try:
        data = _read_archive(name=archive.file_name, compressed=archive.compressed)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ArchiveVerificationFailed(
            f"Archive {archive.file_name} cannot be read: {exc}", details={"archive_id": archive.pk}
        ) from None
    # The checksum first: only bytes known to be what was written are parsed.
    if hashlib.sha256(data).hexdigest() != archive.checksum or data.count(b"\n") != archive.record_count:
        raise ArchiveVerificationFailed(
            f"Archive {archive.file_name} does not match its manifest.", details={"archive_id": archive.pk}
        )
    return [json.loads(line) for line in data.splitlines() if line]


def _write_verified(*, name: str, data: bytes, compressed: bool, expected_count: int) -> tuple[str, int]:
    """Write (or reuse a file left by an interrupted run), read it back, check checksum and count."""
    payload = gzip.compress(data, mtime=0) if compressed else data
    if not default_storage.exists(name):
        name = default_storage.save(name, ContentFile(payload))
    checksum = hashlib.sha256(data).hexdigest()
    try:
        read_back = _read_archive(name=name, compressed=compressed)
    except (OSError, EOFError, zlib.error):
        read_back = b""
    if hashlib.sha256(read_back).hexdigest() != checksum or read_back.count(b"\n") != expected_count:
        # A partial file from a crash mid-write has the right name and the wrong content: replace it once.
        default_storage.delete(name)
        name = default_storage.save(name, ContentFile(payload))
        read_back = _read_archive(name=name, compressed=compressed)
        if hashlib.sha256(read_back).hexdigest() != checksum or read_back.count(b"\n") != expected_count:
            raise ArchiveVerificationFailed(f"Archive {name} did not read back as written.")
    return name, len(payload)


def _remove_leftovers(*, folder: str, month: str, keep: str) -> int:
    """Delete files of this scope and month that no manifest names (left by a run killed before its commit)."""
    try:
        _, files = default_storage.listdir(folder)
    except FileNotFoundError:
        return 0
    removed = 0
    for file_name in files:
        path = f"{folder}/{file_name}"
        if file_name.startswith(f"history_{month}-") and path != keep:
            default_storage.delete(path)
            removed += 1
    return removed


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
    oldest = HistoryRecord.objects.filter(timestamp__lt=cutoff).order_by("timestamp", "id").first()
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
    return HistoryRecord.objects.filter(project_id=over_cap["project_id"]).order_by("timestamp", "id").first()


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
        deleted, _ = HistoryRecord.objects.filter(pk__in=[record.pk for record in batch]).delete()
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
    for scope in scopes:
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


# --- the seed's file layout (§3.3, §3.4): projects/<id>/processing/history_YYYYMM.json + timeline.json ----------


@dataclass(frozen=True)
class HistoryExportResult:
    files: list[str]
    records: int


@dataclass(frozen=True)
class HistoryImportResult:
    files: int
    imported: int
    skipped: int


def _seed_entry(line: dict[str, Any], usernames: dict[int, str]) -> dict[str, Any]:
    return {
        "timestamp": line["timestamp"],
        "action": line["action"],
        "summary": line["summary"],
        "details": line["details"],
        "user_id": usernames.get(line["user_id"]) if line.get("user_id") is not None else None,
        "request_id": line.get("request_id") or "",
        "workflow_id": line.get("workflow_id"),
    }


def _project_months(*, project: Project) -> list[str]:
    """The UTC months (YYYYMM) that hold records of the project, in the database or in its archives."""
    records = HistoryRecord.objects.filter(project=project).order_by()
    months = {f"{moment:%Y%m}" for moment in records.datetimes("timestamp", "month", tzinfo=dt.UTC)}
    months.update(HistoryArchive.objects.filter(scope=project.pk, record_count__gt=0).values_list("month", flat=True))
    return sorted(months)


def _month_lines(*, project: Project, month: str) -> list[dict[str, Any]]:
    """The records of one UTC month of the project, in the database or in its (verified) archive, oldest first."""
    _, start, end = _month_bounds(dt.datetime.strptime(month, "%Y%m").replace(tzinfo=dt.UTC))
    records = HistoryRecord.objects.filter(project=project, timestamp__gte=start, timestamp__lt=end)
    lines = [history_record_to_json(record) for record in records.order_by("timestamp", "id").iterator()]
    for archive in HistoryArchive.objects.filter(scope=project.pk, month=month, record_count__gt=0):
        lines.extend(history_archive_read(archive=archive))
    lines.sort(key=_line_order)
    return lines


class _HashedFile:
    """A UTF-8 file written piece by piece, hashed as it is written (the export's SHA256SUMS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("wb")
        self._hasher = hashlib.sha256()

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self._hasher.update(data)
        self._handle.write(data)

    def close(self) -> str:
        self._handle.close()
        return self._hasher.hexdigest()


def history_export(*, project: Project, out_dir: Path) -> HistoryExportResult:
    """Write the project's whole history (database and archives) in the seed's layout under ``out_dir``.

    One month at a time: a month file is written from that month's records, and ``timeline.json`` is streamed
    with one entry a line, so memory holds one month, never the whole history.
    """
    from django.contrib.auth import get_user_model

    # The seed's layout names the folder after the id its owner knows (the internal key stays internal).
    processing = out_dir / "projects" / project.public_id / "processing"
    processing.mkdir(parents=True, exist_ok=True)
    usernames: dict[int, str] = {}
    counts: dict[str, int] = {}
    sums: dict[str, str] = {}
    first = last = None
    timeline = _HashedFile(processing / "timeline.json")
    try:
        timeline.write(f'{{\n  "project_id": {json.dumps(project.public_id)},\n  "timeline": [')
        for month in _project_months(project=project):
            lines = _month_lines(project=project, month=month)
            if not lines:
                continue
            missing = {line["user_id"] for line in lines if line.get("user_id") is not None} - usernames.keys()
            usernames.update(get_user_model().objects.filter(pk__in=missing).values_list("pk", "username"))
            path = processing / f"history_{month}.json"
            text = json.dumps([_seed_entry(line, usernames) for line in lines], ensure_ascii=False, indent=2)
            path.write_text(text, encoding="utf-8")
            sums[str(path)] = hashlib.sha256(text.encode("utf-8")).hexdigest()
            for line in lines:
                entry = {key: line[key] for key in ("timestamp", "action", "summary", "details")}
                timeline.write(("\n    " if first is None else ",\n    ") + json.dumps(entry, ensure_ascii=False))
                counts[line["action"]] = counts.get(line["action"], 0) + 1
                first = first or line["timestamp"]
                last = line["timestamp"]
        duration = (dt.date.fromisoformat(last[:10]) - dt.date.fromisoformat(first[:10])).days + 1 if first else 0
        summary = {
            "total_actions": sum(counts.values()),
            "duration_days": duration,
            "most_common_action": min(counts, key=lambda action: (-counts[action], action)) if counts else None,
        }
        summary_text = json.dumps(summary, ensure_ascii=False, indent=2).replace("\n", "\n  ")
        generated_at = json.dumps(timezone.now().astimezone(dt.UTC).isoformat())
        closing = "\n  ]" if first else "]"
        timeline.write(f'{closing},\n  "summary": {summary_text},\n  "generated_at": {generated_at}\n}}\n')
    finally:
        sums[str(timeline.path)] = timeline.close()
    # Checksums of the export (sha256sum's format, so `sha256sum -c SHA256SUMS` checks it too); import verifies them.
    (processing / EXPORT_CHECKSUMS).write_text(
        "".join(f"{digest}  {Path(name).name}\n" for name, digest in sums.items()), encoding="utf-8"
    )
    return HistoryExportResult(files=list(sums), records=sum(counts.values()))


EXPORT_CHECKSUMS = "SHA256SUMS"


def _verify_export_checksums(processing: Path, files: list[Path]) -> None:
    """Files an export listed in SHA256SUMS must still match; files it does not list (written by hand in the
    seed's format) and folders without the file (from elsewhere) are taken as they are."""
    sums_path = processing / EXPORT_CHECKSUMS
    if not sums_path.exists():
        return
    expected = {}
    for line in sums_path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        expected[name.strip()] = digest.strip()
    for path in files:
        if path.name in expected and hashlib.sha256(path.read_bytes()).hexdigest() != expected[path.name]:
            raise ValidationFailed(
                f"{path.name}: does not match its checksum in {EXPORT_CHECKSUMS}; the file changed after the export.",
                details={"file": path.name},
            )


def _fingerprint(timestamp: dt.datetime, action: str, summary: str, details: Any) -> str:
    canonical = json.dumps([timestamp.astimezone(dt.UTC).isoformat(), action, summary, details], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _parse_import_entry(entry: Any, *, where: str) -> dict[str, Any]:
    def refuse(message: str) -> ValidationFailed:
        return ValidationFailed(f"{where}: {message}", details={"file": where})

    if not isinstance(entry, dict):
        raise refuse("an entry must be an object")
    try:
        timestamp = dt.datetime.fromisoformat(str(entry.get("timestamp", "")))
    except ValueError:
        raise refuse(f"timestamp {entry.get('timestamp')!r} is not ISO 8601") from None
    if timezone.is_naive(timestamp):
        timestamp = timestamp.replace(tzinfo=dt.UTC)  # the seed wrote naive local times; we read them as UTC
    try:
        action = HistoryAction(entry.get("action")).value
    except ValueError:
        raise refuse(f"action {entry.get('action')!r} is not in the action vocabulary") from None
    details = entry.get("details") or {}
    if not isinstance(details, dict):
        raise refuse("details must be an object")
    workflow_id = entry.get("workflow_id")
    try:
        workflow_id = uuid.UUID(str(workflow_id)) if workflow_id else None
    except ValueError:
        raise refuse(f"workflow_id {workflow_id!r} is not a UUID") from None
    config = settings.MEMORY.history
    return {
        "timestamp": timestamp,
        "action": action,
        "summary": str(entry.get("summary") or DEFAULT_SUMMARIES.get(action, action))[:500],
        "details": redact(details, extra_names=config.redact_extra_fields, max_chars=config.max_detail_value_chars),
        "user_id": entry.get("user_id"),
        "request_id": str(entry.get("request_id") or "")[:128],
        "workflow_id": workflow_id,
    }


def history_import(*, project: Project, source_dir: Path) -> HistoryImportResult:
    """Read ``projects/<id>/processing/history_*.json`` back; an entry already present (in the database or an
    archive) is skipped, so importing the same files twice adds nothing. All files are checked before any write.
    """
    from django.contrib.auth import get_user_model

    processing = source_dir / "projects" / project.public_id / "processing"
    files = sorted(processing.glob("history_[0-9][0-9][0-9][0-9][0-9][0-9].json"))
    if not files:
        raise ValidationFailed(
            f"No history_YYYYMM.json files under {processing}.", details={"fields": {"source": ["No history files."]}}
        )
    _verify_export_checksums(processing, files)
    entries: list[dict[str, Any]] = []
    for path in files:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValidationFailed(f"{path.name}: not readable JSON ({exc})", details={"file": path.name}) from None
        if not isinstance(document, list):
            raise ValidationFailed(f"{path.name}: the file holds one array of records", details={"file": path.name})
        entries.extend(
            _parse_import_entry(entry, where=f"{path.name}[{index}]") for index, entry in enumerate(document)
        )
    known = {
        _fingerprint(record.timestamp, record.action, record.summary, record.details)
        for record in HistoryRecord.objects.filter(project=project).only("timestamp", "action", "summary", "details")
    }
    for archive in HistoryArchive.objects.filter(scope=project.pk, record_count__gt=0):
        known.update(
            _fingerprint(dt.datetime.fromisoformat(line["timestamp"]), line["action"], line["summary"], line["details"])
            for line in history_archive_read(archive=archive)
        )
    usernames = {str(entry["user_id"]) for entry in entries if entry["user_id"] is not None}
    users = {user.get_username(): user for user in get_user_model().objects.filter(username__in=usernames)}
    new_records = []
    for entry in entries:
        fingerprint = _fingerprint(entry["timestamp"], entry["action"], entry["summary"], entry["details"])
        if fingerprint in known:
            continue
        known.add(fingerprint)  # the same entry twice in the files is imported once
        new_records.append(
            HistoryRecord(
                project=project,
                timestamp=entry["timestamp"],
                action=entry["action"],
                summary=entry["summary"],
                details=entry["details"],
                user=users.get(str(entry["user_id"])) if entry["user_id"] is not None else None,
                request_id=entry["request_id"],
                workflow_id=entry["workflow_id"],
            )
        )
    with transaction.atomic():
        HistoryRecord.objects.bulk_create(new_records, batch_size=500)
    return HistoryImportResult(files=len(files), imported=len(new_records), skipped=len(entries) - len(new_records))
