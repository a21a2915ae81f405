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

from memory_app.errors import ComicmemError
from memory_app.models import HistoryArchive, HistoryRecord


class ArchiveVerificationFailed(ComicmemError):
    """An archive file read back does not hold what was written (or what its manifest says): nothing is deleted."""

    default_message = "A history archive failed verification."


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
