"""Archive files: the JSON lines of archived records, written content-addressed, read back and verified against
their manifest (``HistoryArchive``); leftovers of interrupted runs removed."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import zlib
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from memory_app.models import HistoryArchive, HistoryArchivedCount, HistoryRecord, archived_step

# Reading an archive back is a selector (the timeline reads archives too); the package re-exports these two.
from memory_app.selectors.history_archive_files import ArchiveVerificationFailed as ArchiveVerificationFailed
from memory_app.selectors.history_archive_files import history_archive_bytes
from memory_app.selectors.history_archive_files import history_archive_read as history_archive_read


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


def _write_verified(*, name: str, data: bytes, compressed: bool, expected_count: int) -> tuple[str, int]:
    """Write (or reuse a file left by an interrupted run), read it back, check checksum and count."""
    payload = gzip.compress(data, mtime=0) if compressed else data
    if not default_storage.exists(name):
        name = default_storage.save(name, ContentFile(payload))
    checksum = hashlib.sha256(data).hexdigest()
    try:
        read_back = history_archive_bytes(name=name, compressed=compressed)
    except (OSError, EOFError, zlib.error):
        read_back = b""
    if hashlib.sha256(read_back).hexdigest() != checksum or read_back.count(b"\n") != expected_count:
        # A partial file from a crash mid-write has the right name and the wrong content: replace it once.
        default_storage.delete(name)
        name = default_storage.save(name, ContentFile(payload))
        read_back = history_archive_bytes(name=name, compressed=compressed)
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


def history_archive_counts_rebuild(*, archive: HistoryArchive, lines: list[dict[str, Any]]) -> None:
    """Replace the archive's per-day counts (``HistoryArchivedCount``) with those of ``lines``, every record it holds.

    Called in the transaction that points the manifest at the file holding ``lines`` and deletes their rows, so the
    timeline counts a record once before and after it is archived: in the daily counts, then in these.
    """
    groups: dict[tuple[dt.date, str, str], list[dt.datetime]] = {}
    for line in lines:
        timestamp = dt.datetime.fromisoformat(line["timestamp"]).astimezone(dt.UTC)
        groups.setdefault((timestamp.date(), line["action"], archived_step(line)), []).append(timestamp)
    HistoryArchivedCount.objects.filter(archive=archive).delete()
    HistoryArchivedCount.objects.bulk_create(
        [
            HistoryArchivedCount(
                archive=archive,
                scope=archive.scope,
                day=day,
                action=action,
                step=step,
                record_count=len(moments),
                first_timestamp=min(moments),
                last_timestamp=max(moments),
            )
            for (day, action, step), moments in sorted(groups.items())
        ],
        batch_size=500,
    )
