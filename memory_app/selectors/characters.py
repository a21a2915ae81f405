"""Read side of characters beyond the list: their versions, reference images, and names resolved through
aliases (a merged name finds the character it was merged into)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from memory_app.errors import NotFound
from memory_app.models import Character, CharacterReference, CharacterVersion


def character_version_list(*, character: Character) -> QuerySet[CharacterVersion]:
    return CharacterVersion.objects.filter(character=character).select_related("user").order_by("version")


def character_reference_list(*, character: Character) -> QuerySet[CharacterReference]:
    return CharacterReference.objects.filter(character=character).order_by("created_at", "id")


def character_reference_get(*, character: Character, reference_id: str) -> CharacterReference:
    numeric = reference_id.isascii() and reference_id.isdigit() and len(reference_id) < 19
    reference = character_reference_list(character=character).filter(pk=int(reference_id)).first() if numeric else None
    if reference is None:
        raise NotFound(
            f"Character {character.pk} has no reference image '{reference_id}'.", details={"reference_id": reference_id}
        )
    return reference


def project_reference_storage_names(*, project_id: str) -> list[str]:
    """The storage names of the reference images of a project's characters (its internal key) that no other
    project's character uses (names are content-addressed: two projects with one picture share the file).
    Deleting a project deletes these files once its rows are gone."""
    names = set(
        CharacterReference.objects.filter(character__project_id=project_id).values_list("storage_name", flat=True)
    )
    shared = set(
        CharacterReference.objects.filter(storage_name__in=names)
        .exclude(character__project_id=project_id)
        .values_list("storage_name", flat=True)
    )
    return sorted(names - shared)


def character_references_brief(*, character: Character | None) -> list[dict[str, Any]]:
    """What a run keeps of a character's reference images (the image provider gets the files by these names)."""
    if character is None:
        return []
    return [
        {
            "storage_name": item.storage_name,
            "sha256": item.sha256,
            "content_type": item.content_type,
            "dominant_colors": item.dominant_colors,
        }
        for item in character.references.all()
    ]
