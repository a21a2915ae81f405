"""Reading history archive files back, verified against their manifest (``HistoryArchive``).

The read side of the archives, below both the archiving services (which verify what they wrote and rebuild a
month from it) and the history selectors (which count archived records on the partial days of a date range).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from typing import Any

from django.core.files.storage import default_storage

from memory_app.errors import ComicmemError
from memory_app.models import HistoryArchive


class ArchiveVerificationFailed(ComicmemError):
    """An archive file read back does not hold what was written (or what its manifest says): nothing is deleted."""

    default_message = "A history archive failed verification."


def history_archive_bytes(*, name: str, compressed: bool) -> bytes:
    """The JSON lines of the archive file ``name`` (a storage name from a manifest), decompressed."""
    with default_storage.open(name, "rb") as handle:
        raw = handle.read()
    return gzip.decompress(raw) if compressed else raw


def history_archive_read(*, archive: HistoryArchive) -> list[dict[str, Any]]:
    """The records of an archive, verified against its manifest (checksum and count)."""
    if not archive.file_name:
        return []
    try:
        data = history_archive_bytes(name=archive.file_name, compressed=archive.compressed)
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
