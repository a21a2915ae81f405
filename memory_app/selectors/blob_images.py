"""Images read back from blob storage for staff pages: the bytes when they are whole, or why they are not.

A page of thumbnails never fails because one file went missing or was damaged: the caller shows a placeholder
that says which of the two it was.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from django.core.files.storage import Storage

from memory_app.blob_storage import DEFAULT_STORAGE, blob_storage

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}


@dataclass(frozen=True)
class BlobImage:
    data: bytes | None
    content_type: str = ""
    # "missing", "damaged" or "too large" when ``data`` is None.
    problem: str = ""


def blob_image_read(*, name: str, sha256: str | None = None, max_bytes: int, alias: str = DEFAULT_STORAGE) -> BlobImage:
    """The image stored as ``name``, checked: present, no larger than ``max_bytes``, the recorded ``sha256`` when
    one is known, and an image Pillow can decode."""
    from PIL import Image, UnidentifiedImageError

    if not name:
        return BlobImage(data=None, problem="missing")
    storage: Storage = blob_storage(alias)
    try:
        with storage.open(name, "rb") as handle:
            data: bytes = handle.read(max_bytes + 1)
    except (FileNotFoundError, OSError, ValueError):
        # ValueError: a name the storage refuses (outside its root); OSError covers the object store's client errors
        # as django-storages raises them for a missing key.
        return BlobImage(data=None, problem="missing")
    if len(data) > max_bytes:
        return BlobImage(data=None, problem="too large")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        return BlobImage(data=None, problem="damaged")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or ""
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return BlobImage(data=None, problem="damaged")
    content_type = IMAGE_TYPES.get(image_format)
    if content_type is None:
        return BlobImage(data=None, problem="damaged")
    return BlobImage(data=data, content_type=content_type)
