"""The seed's file layout (§3.3, §3.4): export to ``projects/<id>/processing/history_YYYYMM.json`` and
``timeline.json`` (with SHA256SUMS), and import of those files back, skipping what is already present."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from memory_app.errors import ValidationFailed
from memory_app.models import DEFAULT_SUMMARIES, HistoryAction, HistoryArchive, HistoryRecord, Project
from memory_app.redaction import redact
from memory_app.services.history.archive_files import (
    _line_order,
    _month_bounds,
    history_archive_read,
    history_record_to_json,
)
from memory_app.services.search import history_entries_build, search_entries_insert


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
    first: str | None = None
    last: str | None = None
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
        duration = (
            (dt.date.fromisoformat(last[:10]) - dt.date.fromisoformat(first[:10])).days + 1 if first and last else 0
        )
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
        action = HistoryAction(entry.get("action", "")).value
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
        search_entries_insert(history_entries_build(new_records), batch_size=500)
    return HistoryImportResult(files=len(files), imported=len(new_records), skipped=len(entries) - len(new_records))
