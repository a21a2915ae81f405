"""Blob I/O of file namespaces: where a blob lives, the temporary-file-then-rename writer, removal, and the verified
open (size and sha256) of a blob an entry names."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

from memory_app.models import CacheEntry
from memory_app.services.cache.values import _PRECOMPRESSED_TYPES

_CHUNK = 1024 * 1024


def _blob_file(directory: Path, blob_name: str) -> str:
    """Where a blob lives, as a string: the hit path opens it without pathlib's joining (about 10 µs a hit)."""
    # Two hex digits of sharding keep directories small; blob names are hex digests, never user input.
    return os.path.join(directory, blob_name[:2], blob_name)


def _blob_path(directory: Path, blob_name: str) -> Path:
    return Path(_blob_file(directory, blob_name))


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _BlobWriter:
    """Writes chunks to a temporary file, gzip-compressing once they pass the threshold, then renames it."""

    def __init__(self, directory: Path, digest: str, content_type: str, threshold: int | None) -> None:
        self.directory = directory
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
        temporary_directory = self.directory / ".tmp"
        temporary_directory.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=temporary_directory, prefix=f"{self.digest[:16]}-")
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
            final = _blob_path(self.directory, blob_name)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, final)
            _fsync_directory(final.parent)
            return blob_name
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def _chunks_of(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(_CHUNK):
        yield chunk


def _remove_blobs(directory: Path, blob_names: Iterable[str]) -> None:
    for blob_name in blob_names:
        with contextlib.suppress(FileNotFoundError):
            _blob_path(directory, blob_name).unlink()


class _FileHit(NamedTuple):
    """The columns of a live file entry that a read needs: the hit path builds no model instance."""

    pk: int
    blob_name: str
    size_bytes: int
    checksum: str
    compressed: bool
    value_format: str
    content_type: str


def _verified_open(directory: Path, entry: CacheEntry | _FileHit) -> IO[bytes] | None:
    """The blob opened and verified (size and sha256, read in chunks), rewound; None when missing or corrupted.

    The returned handle keeps reading the verified bytes even if the blob is replaced or removed meanwhile:
    blobs are never rewritten in place, only renamed over or unlinked.
    """
    try:
        handle = open(_blob_path(directory, entry.blob_name), "rb")  # noqa: SIM115 - returned to the caller
    except FileNotFoundError:
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
