"""Whole-value reads of file entries, with the speculative read: a large blob hit before in this process is read on
a helper thread beside its row's lookup."""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

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


class _SpeculativeBlobReads:
    """Reads a large blob on a helper thread while its entry's row is looked up, so a hit waits for the longer of
    the two, not for both.

    The blob to read is a guess: the one the key's last hit in this process read. The row decides: the guessed
    bytes are used only when the row names that very blob, and they are verified against the row's size and
    checksum like any other read; a wrong guess costs one wasted read. Reading a file and hashing it release the
    GIL, so the thread runs beside the database round trip. Small blobs are read inline: handing them to a thread
    costs more than reading them.
    """

    min_size = 256 * 1024
    capacity = 1024
    workers = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guesses: dict[tuple[str, str], tuple[str, int]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    def start(self, namespace: str, digest: str, location: str) -> tuple[str, Future[_BlobRead | None]] | None:
        """The guessed blob's name and its pending read, or None when there is nothing worth guessing."""
        guess = self._guesses.get((namespace, digest))
        if guess is None:
            return None
        blob_name, size = guess
        return blob_name, self._pool().submit(_read_and_hash, location, blob_name, size)

    def remember(self, namespace: str, digest: str, entry: _FileHit) -> None:
        key = (namespace, digest)
        with self._lock:
            if entry.size_bytes < self.min_size:
                self._guesses.pop(key, None)
            else:
                if key not in self._guesses and len(self._guesses) >= self.capacity:
                    del self._guesses[next(iter(self._guesses))]  # the oldest guess
                self._guesses[key] = (entry.blob_name, entry.size_bytes)

    def forget(self, namespace: str, digest: str) -> None:
        with self._lock:
            self._guesses.pop((namespace, digest), None)

    def _pool(self) -> ThreadPoolExecutor:
        # A forked child (a Celery prefork worker) inherits the executor but none of its threads: it makes its own.
        if self._executor is None or self._pid != os.getpid():
            with self._lock:
                if self._executor is None or self._pid != os.getpid():
                    self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="comicmem-blob-read")
                    self._pid = os.getpid()
        return self._executor


_blob_reads = _SpeculativeBlobReads()


def _file_read(namespace: str, digest: str) -> tuple[_FileHit, bytes] | None:
    """The whole value of a file entry, verified while it is read: the blob is read once, not once to verify and
    again to return it (``cache_open`` streams instead, for values too large to hold). A large blob hit before in
    this process is read beside the row's lookup (``_SpeculativeBlobReads``)."""
    location = cache_namespace_location(namespace=namespace)
    now = timezone.now()
    speculative = _blob_reads.start(namespace, digest, location)
    entry = _file_entry_hit(namespace, digest, now)
    if entry is None:
        _blob_reads.forget(namespace, digest)
        _counters().add(namespace, misses=1)
        return None
    if speculative is not None and speculative[0] == entry.blob_name:
        read = speculative[1].result()
    else:
        read = _read_and_hash(location, entry.blob_name, entry.size_bytes)
    if read is None or len(read[0]) != entry.size_bytes or read[1] != entry.checksum:
        _blob_reads.forget(namespace, digest)
        _file_corrupted(namespace, location, entry)
        return None
    _blob_reads.remember(namespace, digest, entry)
    _file_hits.add(namespace, entry.pk, now)
    data = read[0]
    return entry, gzip.decompress(data) if entry.compressed else data
