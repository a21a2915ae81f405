"""Blobs in Django storage: the storage aliases, the local backend that writes atomically, and signed URLs.

Every blob goes through ``django.core.files.storage.storages``:

* ``default``: run outputs (panels, pages), history archives, released contexts, backups.
* ``cache``: the blobs of file cache namespaces (their ``CacheEntry`` rows say which blob holds which key).

In the embedded mode both are folders of this machine (``var/media`` and ``CACHE_DIR``); in production both are
prefixes of one S3-compatible bucket (django-storages), shared by every host. Nothing here locks a file: blob
names are content-addressed or owned by the one writer the database elected, so two hosts that write the same
name write the same bytes, and the database row that points at a blob is written only after the blob is whole.

A browser loads a blob without an Authorization header through a signed URL that expires: the object store's own
presigned URL in production, a Django-signed token served by ``/api/files/<token>`` in the embedded mode.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.base import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.urls import reverse
from storages.backends.s3 import S3Storage

DEFAULT_STORAGE = "default"
CACHE_STORAGE = "cache"
# The aliases a signed URL may name: a token can never point into another storage (static files, say).
SIGNED_ALIASES = frozenset({DEFAULT_STORAGE, CACHE_STORAGE})
_SIGNING_SALT = "comicmem.blob-url"
STAGING_FOLDER = ".tmp"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_./-]*")


class AtomicFileSystemStorage(FileSystemStorage):
    """Local files that appear whole or not at all: bytes go to a temporary file in ``<top folder>/.tmp``, are
    fsynced and renamed over the name, then the folder is fsynced. A name is overwritten, never renamed to
    ``name_abc123``: the names written here are content-addressed or owned by a single writer, so a second write
    of a name carries the same bytes (or replaces its own earlier attempt)."""

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return name

    def staging_directory(self, name: str) -> str:
        """Where a writer of ``name`` stages its bytes: beside their final place (same file system, so the rename
        is atomic), in the ``.tmp`` folder of the name's top folder, which cleanup sweeps."""
        top = name.split("/", 1)[0] if "/" in name else ""
        directory = os.path.join(self.location, top, STAGING_FOLDER)
        os.makedirs(directory, exist_ok=True)
        return directory

    def _save(self, name: str, content: Any) -> str:
        final = self.path(name)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        staged = getattr(content, "temporary_file_path", None)
        if staged is not None and os.stat(staged()).st_dev == os.stat(os.path.dirname(final)).st_dev:
            temporary = staged()  # written and fsynced by its writer, on this file system: renamed, not copied
        else:
            descriptor, temporary = tempfile.mkstemp(dir=self.staging_directory(name))
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    if hasattr(content, "seek"):
                        content.seek(0)
                    for chunk in content.chunks():
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        os.replace(temporary, final)
        descriptor = os.open(os.path.dirname(final), os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return name


class CacheFileSystemStorage(AtomicFileSystemStorage):
    """The ``cache`` alias of the embedded mode: files under ``settings.CACHE_DIR``, read each time (a test or a
    bench that moves ``CACHE_DIR`` moves the storage with it)."""

    @property
    def base_location(self) -> str:
        # FileSystemStorage caches it; CACHE_DIR is read live here instead.
        location = self.__dict__.get("_location")
        return str(location if location is not None else settings.CACHE_DIR)

    @property
    def location(self) -> str:
        base = self.base_location
        resolved = self.__dict__.get("_resolved_location")
        if resolved is None or resolved[0] != base:
            resolved = (base, os.path.abspath(base))
            self.__dict__["_resolved_location"] = resolved
        return resolved[1]

    def path(self, name: str) -> str:
        # Every cache hit asks for a blob's path: a name of plain segments (what blob names are) is joined directly,
        # anything else goes through FileSystemStorage's checked join.
        if _PLAIN_NAME.fullmatch(name) and ".." not in name:
            return os.path.join(self.location, name)
        return super().path(name)


class StagedFile(File):  # type: ignore[type-arg]  # django-stubs' File is generic over the handle's content
    """A local file a writer finished (fsynced); a local storage renames it into place instead of copying it."""

    def __init__(self, path: str) -> None:
        super().__init__(open(path, "rb"), name=os.path.basename(path))  # noqa: SIM115 - closed by the writer
        self._path = path

    def temporary_file_path(self) -> str:
        return self._path


def blob_storage(alias: str) -> Storage:
    return storages[alias]


def blob_storage_is_local(alias: str) -> bool:
    return isinstance(storages[alias], FileSystemStorage)


def blob_signed_url(
    *, name: str, alias: str = DEFAULT_STORAGE, absolute_url: Callable[[str], str] | None = None
) -> str:
    """A URL that loads the blob ``name`` of storage ``alias`` without credentials, for
    ``storage.signed_url_max_age`` seconds: the object store's presigned URL (``storage.signed_urls: store``), or
    a Django-signed ``/api/files/`` URL served by this app (local files, or ``signed_urls: web``), made absolute by
    ``absolute_url`` when given."""
    if alias not in SIGNED_ALIASES:
        raise ValueError(f"no signed URLs for storage {alias!r}")
    max_age = settings.MEMORY.storage.signed_url_max_age
    storage = storages[alias]
    if isinstance(storage, S3Storage) and settings.MEMORY.storage.signed_urls == "store":
        # The object store signs its own URLs: a presigned GET that expires after max_age.
        return str(storage.url(name, expire=max_age))
    token = signing.dumps([alias, name], salt=_SIGNING_SALT, compress=True)
    path = reverse("blob-signed", kwargs={"token": token})
    return absolute_url(path) if absolute_url is not None else path


def blob_read(*, alias: str, name: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a blob, in one request: ``FileNotFoundError`` when it is missing.

    ``storage.open`` on S3 asks for the object's metadata, then downloads it through a transfer manager into a
    temporary file (a HEAD and a GET, with threads): right for a large stream, slow for a cached panel. A whole
    read here is one ranged GET.
    """
    storage = storages[alias]
    if isinstance(storage, S3Storage):
        from botocore.exceptions import ClientError
        from storages.utils import clean_name

        key = storage._normalize_name(clean_name(name))  # the key S3Storage itself would use (location prefix)
        try:
            answer = storage.connection.meta.client.get_object(
                Bucket=storage.bucket_name, Key=key, Range=f"bytes=0-{max(limit - 1, 0)}"
            )
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (404, 416):
                raise FileNotFoundError(f"blob {name!r} does not exist") from exc
            raise
        data: bytes = answer["Body"].read()
        return data
    with storage.open(name, "rb") as handle:
        read: bytes = handle.read(limit)
        return read


class BlobTokenRefused(Exception):
    """A signed blob URL whose signature is wrong or whose time is up."""


def blob_token_read(*, token: str) -> tuple[str, str]:
    """The (alias, name) a signed token names; ``BlobTokenRefused`` when it is tampered with or expired."""
    try:
        value = signing.loads(token, salt=_SIGNING_SALT, max_age=settings.MEMORY.storage.signed_url_max_age)
    except signing.SignatureExpired as exc:
        raise BlobTokenRefused("This link has expired.") from exc
    except signing.BadSignature as exc:
        raise BlobTokenRefused("This link is not valid.") from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or value[0] not in SIGNED_ALIASES
        or not isinstance(value[1], str)
    ):
        raise BlobTokenRefused("This link is not valid.")
    return value[0], value[1]
