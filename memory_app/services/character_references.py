"""Reference images of characters: checked by content, stored under content-addressed names, released when no
reference uses them any more.

An upload is accepted when Pillow recognises it as PNG, JPEG or WebP from its bytes (the filename and the
declared content type are not trusted), verifies it and decodes every pixel of it, within the size and pixel
limits of ``memory.pipelines`` (``reference_max_bytes``, ``reference_max_pixels``). The file is written to
Django storage as ``references/<sha256>.<ext>`` before the row commits: a retry writes the same name, and a row
that never commits leaves a file whose name is its content (no half-state to clean up in between).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from memory_app.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from memory_app.models import Character, CharacterReference, HistoryAction
from memory_app.services.history import history_record

FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    sha256: str
    content_type: str
    extension: str
    width: int
    height: int
    dominant_colors: list[str]


def _refused(message: str) -> ValidationFailed:
    return ValidationFailed(message, details={"fields": {"file": [message]}})


def reference_image_check(data: bytes) -> CheckedImage:
    """The upload as a ``CheckedImage``, or a 400 (not PNG/JPEG/WebP, damaged, too many pixels) or 413."""
    from PIL import Image, UnidentifiedImageError

    config = settings.MEMORY.pipelines
    if len(data) > config.reference_max_bytes:
        raise PayloadTooLarge(
            f"The image is larger than {config.reference_max_bytes} bytes.",
            details={"limit_bytes": config.reference_max_bytes, "size_bytes": len(data)},
        )
    if not data:
        raise _refused("The file is empty.")
    try:
        with warnings.catch_warnings():
            # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that; both are refusals here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
                kind, (width, height) = image.format, image.size
                if width * height > config.reference_max_pixels:
                    raise _refused(f"The image has more than {config.reference_max_pixels} pixels.")
                image.verify()
            # verify() checks structure (and PNG checksums) only; decoding every pixel finds a truncated body.
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
                image.load()
                dominant = _dominant_colors(image)
    except ValidationFailed:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _refused("The file is not a PNG, JPEG or WebP image.") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise _refused("The image is damaged or truncated.") from None
    if kind not in FORMATS:
        raise _refused("The file is not a PNG, JPEG or WebP image.")
    content_type, extension = FORMATS[kind]
    return CheckedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        extension=extension,
        width=width,
        height=height,
        dominant_colors=dominant,
    )


def _dominant_colors(image: object, count: int = 4) -> list[str]:
    """The ``count`` most common colours (#RRGGBB, most common first) of a small copy of the picture."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    small = image.convert("RGB")
    small.thumbnail((64, 64))
    quantized = small.quantize(colors=count, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    ranked = sorted(quantized.getcolors() or [], key=lambda item: (-item[0], item[1]))
    colors = []
    for _pixels, index in ranked:
        assert isinstance(index, int)  # a palette index: quantize() gives a "P" image
        offset = index * 3
        red, green, blue = palette[offset : offset + 3]
        colors.append(f"#{red:02X}{green:02X}{blue:02X}")
    return list(dict.fromkeys(colors))


def _store(image: CheckedImage) -> str:
    name = f"references/{image.sha256}.{image.extension}"
    if not default_storage.exists(name):
        saved = default_storage.save(name, ContentFile(image.data))
        if saved != name:
            # Another request stored the same content meanwhile, and storage gave ours another name: the same
            # bytes are at ``name`` already.
            default_storage.delete(saved)
    return name


def character_reference_add(*, user: User, character: Character, data: bytes) -> tuple[CharacterReference, bool]:
    """Add a reference image to the character; the same picture twice is the one reference (created False)."""
    image = reference_image_check(data)
    existing = CharacterReference.objects.filter(character=character, sha256=image.sha256).first()
    if existing is not None:
        return existing, False
    name = _store(image)
    with transaction.atomic():
        locked = Character.objects.select_for_update().filter(pk=character.pk).first()
        if locked is None:
            raise NotFound(f"Character '{character.pk}' does not exist.", details={"character_id": character.pk})
        character = locked
        existing = CharacterReference.objects.filter(character=character, sha256=image.sha256).first()
        if existing is not None:
            return existing, False
        limit = settings.MEMORY.pipelines.reference_max_per_character
        if character.references.count() >= limit:
            raise Conflict(
                f"A character keeps at most {limit} reference images; delete one first.",
                details={"limit": limit, "character_id": character.pk},
            )
        reference = CharacterReference.objects.create(
            character=character,
            storage_name=name,
            sha256=image.sha256,
            content_type=image.content_type,
            size_bytes=len(image.data),
            width=image.width,
            height=image.height,
            dominant_colors=image.dominant_colors,
            uploaded_by=user,
        )
        history_record(
            project=character.project,
            action=HistoryAction.CHARACTER_REFERENCE_ADDED,
            user=user,
            details={
                "character_id": character.pk,
                "name": character.name,
                "reference_id": reference.pk,
                "sha256": image.sha256,
            },
        )
    return reference, True


def character_reference_delete(*, user: User, character: Character, reference_id: str) -> None:
    numeric = reference_id.isascii() and reference_id.isdigit() and len(reference_id) < 19
    with transaction.atomic():
        reference = (
            CharacterReference.objects.select_for_update().filter(character=character, pk=int(reference_id)).first()
            if numeric
            else None
        )
        if reference is None:
            raise NotFound(
                f"Character {character.pk} has no reference image '{reference_id}'.",
                details={"reference_id": reference_id},
            )
        reference.delete()
        history_record(
            project=character.project,
            action=HistoryAction.CHARACTER_REFERENCE_REMOVED,
            user=user,
            details={
                "character_id": character.pk,
                "name": character.name,
                "reference_id": int(reference_id),
                "sha256": reference.sha256,
            },
        )
        reference_files_release(storage_names=[reference.storage_name])


def reference_files_release(*, storage_names: list[str]) -> None:
    """After the current transaction commits, delete those of ``storage_names`` no reference uses any more."""

    def release() -> None:
        used = set(
            CharacterReference.objects.filter(storage_name__in=storage_names).values_list("storage_name", flat=True)
        )
        for name in set(storage_names) - used:
            default_storage.delete(name)

    if storage_names:
        transaction.on_commit(release)
