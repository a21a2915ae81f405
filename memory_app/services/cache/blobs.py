"""Blob I/O of file namespaces, through the ``cache`` Django storage (``memory_app.blob_storage``): a blob's storage
name, the writer (stage locally, hash, then save under the content's name), removal, and the verified open (size and
sha256) of a blob an entry names."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

from django.core.files.storage import Storage

from memory_app.blob_storage import CACHE_STORAGE, STAGING_FOLDER, StagedFile, blob_storage
from memory_app.models import CacheEntry
from memory_app.services.cache.values import _PRECOMPRESSED_TYPES

_CHUNK = 1024 * 1024


def _cache_storage() -> Storage:
    return blob_storage(CACHE_STORAGE)


def _blob_storage_name(location: str, blob_name: str) -> str:
    """A blob's name in the cache storage: ``<namespace folder>/<two hex digits>/<blob name>``."""
    # Two hex digits of sharding keep directories small; blob names are hex digests, never user input.
    return f"{location}/{blob_name[:2]}/{blob_name}"


class _BlobWriter:
    """Stages chunks in a local temporary file (gzip-compressing once they pass the threshold) while hashing them,
    then saves it under its content-addressed name: a local storage renames it into place, an object store
    uploads it. Two hosts that store the same value write the same name with the same bytes."""

    def __init__(self, location: str, staging: Path, digest: str, content_type: str, threshold: int | None) -> None:
        self.location = location
        self.staging = staging
        self.digest = digest
        self.content_type = content_type
        self.threshold = threshold
        self.compressed = False
        self.size = 0
        self.checksum = ""

    def _encoded(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        if self.threshold is None or self.content_type in _PRECOMPRESSED_TYPES:
            yield from chunks
            return
        head = bytearray()
        iterator = iter(chunks)
        for chunk in iterator:
            head += chunk
            if len(head) > self.threshold:
                break
        else:
            yield bytes(head)
            return
        self.compressed = True
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip stream (§7.3 uses gzip)
        yield compressor.compress(bytes(head))
        for chunk in iterator:
            yield compressor.compress(chunk)
        yield compressor.flush()

    def write(self, chunks: Iterable[bytes]) -> str:
        self.staging.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.staging, prefix=f"{self.digest[:16]}-")
        hasher = hashlib.sha256()
        try:
            with os.fdopen(descriptor, "wb") as handle:
                for piece in self._encoded(chunks):
                    if piece:
                        handle.write(piece)
                        hasher.update(piece)
                        self.size += len(piece)
                handle.flush()
                os.fsync(handle.fileno())
            self.checksum = hasher.hexdigest()
            blob_name = f"{self.digest}-{self.checksum[:16]}"
            with StagedFile(temporary) as staged:
                _cache_storage().save(_blob_storage_name(self.location, blob_name), staged)
            return blob_name
        finally:
            # Gone already when a local storage renamed it into place.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _staging_directory(directory: Path) -> Path:
    """The local folder a namespace's writers stage blobs in (``CACHE_DIR/<folder>/.tmp``, swept by cleanup)."""
    return directory / STAGING_FOLDER


def _chunks_of(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(_CHUNK):
        yield chunk


def _remove_blobs(location: str, blob_names: Iterable[str]) -> None:
    storage = _cache_storage()
    for blob_name in blob_names:
        with contextlib.suppress(FileNotFoundError):
            storage.delete(_blob_storage_name(location, blob_name))


class _FileHit(NamedTuple):
    """The columns of a live file entry that a read needs: the hit path builds no model instance."""

    pk: int
    blob_name: str
    size_bytes: int
    checksum: str
    compressed: bool
    value_format: str
    content_type: str
    expires_at: dt.datetime | None = None


def _blob_open(location: str, blob_name: str) -> IO[bytes] | None:
    """The blob opened for reading, None when it is missing."""
    try:
        return _cache_storage().open(_blob_storage_name(location, blob_name), "rb")
    except FileNotFoundError:
        return None


def _verified_open(location: str, entry: CacheEntry | _FileHit) -> IO[bytes] | None:
    """The blob opened and verified (size and sha256, read in chunks), rewound; None when missing or corrupted.

    The returned handle keeps reading the verified bytes even if the blob is replaced or removed meanwhile: a local
    blob is never rewritten in place, only renamed over or unlinked; an object store's read is a copy.
    """
    handle = _blob_open(location, entry.blob_name)
    if handle is None:
        return None
    hasher = hashlib.sha256()
    size = 0
    while chunk := handle.read(_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    if size != entry.size_bytes or hasher.hexdigest() != entry.checksum:
        handle.close()
        return None
    handle.seek(0)
    return handle
