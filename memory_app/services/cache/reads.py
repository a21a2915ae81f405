"""Whole-value reads of file entries: a key hit lately in this process is one verified read of its blob, without the
database; otherwise its row is looked up, with a large blob hit before read on a helper thread beside the lookup."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from memory_app.blob_storage import CACHE_STORAGE, blob_read
from memory_app.services.cache.blobs import _blob_storage_name, _FileHit
from memory_app.services.cache.counters import _counters
from memory_app.services.cache.files import _file_corrupted, _file_entry_hit
from memory_app.services.cache.hits import _file_hits
from memory_app.services.cache.namespaces import cache_namespace_location

_BlobRead = tuple[bytes, str]  # a blob's bytes and their sha256


def _read_and_hash(location: str, blob_name: str, size: int) -> _BlobRead | None:
    """A blob's bytes and their sha256, None when it is gone. One read of the size a row names and one more byte:
    a longer blob is caught without a stat."""
    try:
        data = blob_read(alias=CACHE_STORAGE, name=_blob_storage_name(location, blob_name), limit=size + 1)
    except FileNotFoundError:
        return None
    return data, hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class _Known:
    """A file entry's row as a hit in this process last read it, and when."""

    location: str
    entry: _FileHit
    checked_at: float  # time.monotonic() of the read


class _KnownEntries:
    """The rows of the file entries this process hit lately (a bounded map), which make a hit one read of the blob.

    A hit within ``cache_options.entry_recheck_seconds`` of its row's last read (and before the row's expiry) asks
    the database nothing: the row names the blob, its size and its checksum, and the blob is read and verified
    against them on the calling thread, as every hit verifies it. Whatever else removes or replaces a value takes
    its blob away (a rewrite, a delete, a clear, an eviction or cleanup removes the blob the row named; blob names
    carry the key and the content's checksum), so such a hit fails to verify and asks the database, which decides
    as it always did. What changes a row and leaves its blob behind (staff deleting the row in the admin) is seen
    within the recheck interval.

    When the row is due for its recheck, a large blob is read on a helper thread beside the row's lookup, so the
    hit waits for the longer of the two, not for both: the blob is a guess (the one the row named before), used
    only when the row names that very blob, and verified like any other read; a wrong guess costs one wasted read.
    Reading a file and hashing it release the GIL, so the thread runs beside the database round trip. Small blobs
    are read inline: handing them to a thread costs more than reading them.
    """

    min_size = 256 * 1024
    capacity = 1024
    workers = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], _Known] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    def fresh(self, namespace: str, digest: str, location: str, now: dt.datetime) -> _FileHit | None:
        """The key's row as last read, if it may stand in for the database's answer now; else None."""
        known = self._known.get((namespace, digest))
        if known is None or known.location != location:
            return None
        recheck = settings.MEMORY.cache_options.entry_recheck_seconds
        if time.monotonic() - known.checked_at >= recheck:
            return None
        expires_at = known.entry.expires_at
        return known.entry if expires_at is None or expires_at > now else None

    def start(self, namespace: str, digest: str, location: str) -> tuple[str, Future[_BlobRead | None]] | None:
        """The guessed blob's name and its pending read, or None when there is nothing worth guessing."""
        known = self._known.get((namespace, digest))
        if known is None or known.entry.size_bytes < self.min_size:
            return None
        blob_name = known.entry.blob_name
        return blob_name, self._pool().submit(_read_and_hash, location, blob_name, known.entry.size_bytes)

    def remember(self, namespace: str, digest: str, location: str, entry: _FileHit) -> None:
        key = (namespace, digest)
        with self._lock:
            self._known.pop(key, None)  # re-inserted last: the oldest entry is the first in the map
            if len(self._known) >= self.capacity:
                del self._known[next(iter(self._known))]
            self._known[key] = _Known(location, entry, time.monotonic())

    def forget(self, namespace: str, digest: str) -> None:
        with self._lock:
            self._known.pop((namespace, digest), None)

    def forget_namespace(self, namespace: str) -> None:
        with self._lock:
            for key in [key for key in self._known if key[0] == namespace]:
                del self._known[key]

    def clear(self) -> None:
        with self._lock:
            self._known.clear()

    def _pool(self) -> ThreadPoolExecutor:
        # A forked child (a Celery prefork worker) inherits the executor but none of its threads: it makes its own.
        if self._executor is None or self._pid != os.getpid():
            with self._lock:
                if self._executor is None or self._pid != os.getpid():
                    self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="comicmem-blob-read")
                    self._pid = os.getpid()
        return self._executor


_known_entries = _KnownEntries()


def _file_read(namespace: str, digest: str) -> tuple[_FileHit, bytes] | None:
    """The whole value of a file entry, verified while it is read: the blob is read once, not once to verify and
    again to return it (``cache_open`` streams instead, for values too large to hold). A key this process hit
    lately is read without asking the database; a large blob hit before is read beside the row's lookup
    (``_KnownEntries``)."""
    location = cache_namespace_location(namespace=namespace)
    now = timezone.now()
    known = _known_entries.fresh(namespace, digest, location, now)
    if known is not None:
        read = _read_and_hash(location, known.blob_name, known.size_bytes)
        if _verifies(read, known):
            assert read is not None
            return _hit(namespace, known, read[0], now)
        # Gone or changed since: the row, read again below, says whether the key has another value, none, or a
        # corrupted blob.
        _known_entries.forget(namespace, digest)
    speculative = _known_entries.start(namespace, digest, location)
    entry = _file_entry_hit(namespace, digest, now)
    if entry is None:
        _known_entries.forget(namespace, digest)
        _counters().add(namespace, misses=1)
        return None
    if speculative is not None and speculative[0] == entry.blob_name:
        read = speculative[1].result()
    else:
        read = _read_and_hash(location, entry.blob_name, entry.size_bytes)
    if not _verifies(read, entry):
        _known_entries.forget(namespace, digest)
        _file_corrupted(namespace, location, entry)
        return None
    assert read is not None
    _known_entries.remember(namespace, digest, location, entry)
    return _hit(namespace, entry, read[0], now)


def _verifies(read: _BlobRead | None, entry: _FileHit) -> bool:
    return read is not None and len(read[0]) == entry.size_bytes and read[1] == entry.checksum


def _hit(namespace: str, entry: _FileHit, data: bytes, now: dt.datetime) -> tuple[_FileHit, bytes]:
    _file_hits.add(namespace, entry.pk, now)
    return entry, gzip.decompress(data) if entry.compressed else data
