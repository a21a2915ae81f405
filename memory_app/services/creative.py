"""Creative memory services (seed §6): character records, style templates, their usage and ratings."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, Q
from django.utils import timezone

from memory_app.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from memory_app.models import Character, HistoryAction, Project, StyleTemplate, StyleUsage
from memory_app.redaction import redact
from memory_app.services.characters import character_design_store
from memory_app.services.history import history_record


def character_upsert(
    *,
    project: Project,
    name: str,
    appearance_features: dict[str, Any],
    consistent_features: list[str],
    personality_traits: list[str],
    colors: dict[str, str],
    mentions: int = 0,
    aliases: list[str] | None = None,
    user: User | None = None,
    workflow_id: uuid.UUID | str | None = None,
) -> tuple[Character, bool]:
    """An automatic design stored: create the character (found by name or alias), or update it without letting
    it drift and without touching what a person set (``services.characters.character_design_merge``); the
    ``aliases`` the story gives it are added where no other character of the project holds them.
    Returns (character, created)."""
    return character_design_store(
        project=project,
        design={
            "name": name,
            "aliases": list(aliases or []),
            "appearance_features": appearance_features,
            "consistent_features": consistent_features,
            "personality_traits": personality_traits,
            "colors": colors,
            "mentions": mentions,
        },
        user=user,
        workflow_id=workflow_id,
    )


def style_create(
    *,
    user: User,
    template_id: str,
    name: str,
    prompt: str = "",
    negative_prompt: str = "",
    visual_parameters: dict[str, Any] | None = None,
    reference_examples: list[str] | None = None,
) -> StyleTemplate:
    """Create the user's style. Its id is the user's (another user's style of that id is a different style);
    an id the user already has, or a built-in's (visible to everyone), is a Conflict."""
    taken = StyleTemplate.objects.filter(Q(owner=user) | Q(owner__isnull=True), public_id=template_id)
    if taken.exists():
        raise Conflict(f"Style template '{template_id}' exists already.", details={"template_id": template_id})
    try:
        with transaction.atomic():
            return StyleTemplate.objects.create(
                public_id=template_id,
                name=name,
                prompt=prompt,
                negative_prompt=negative_prompt,
                # Stored, shown and copied into prompts: sensitive keys never are (memory_app/redaction.py).
                visual_parameters=redact(visual_parameters or {}),
                reference_examples=reference_examples or [],
                owner=user,
            )
    except IntegrityError:
        raise Conflict(
            f"Style template '{template_id}' exists already.", details={"template_id": template_id}
        ) from None


STYLE_EDITABLE_FIELDS = ("name", "prompt", "negative_prompt", "visual_parameters", "reference_examples")


def _own_style(*, user: User, style: StyleTemplate, verb: str) -> None:
    if style.owner_id is None:
        raise PermissionDenied(
            f"'{style.public_id}' is a built-in style and cannot be {verb}; copy it "
            f"(POST /api/styles/{style.public_id}/copy) and change the copy.",
            details={"template_id": style.public_id, "built_in": True},
        )
    if style.owner_id != user.pk:
        raise PermissionDenied(
            f"Only the owner of '{style.public_id}' may change it.", details={"template_id": style.public_id}
        )


def style_update(*, user: User, style: StyleTemplate, fields: dict[str, Any]) -> StyleTemplate:
    """The owner's change of their style (the id stays: runs and usages name it). Built-ins are read-only."""
    _own_style(user=user, style=style, verb="changed")
    with transaction.atomic():
        locked = StyleTemplate.objects.select_for_update().filter(pk=style.pk).first()
        if locked is None:  # deleted by another request meanwhile
            raise NotFound(
                f"Style template '{style.public_id}' does not exist.", details={"template_id": style.public_id}
            )
        style = locked
        for field, value in fields.items():
            if field not in STYLE_EDITABLE_FIELDS:
                raise ValidationFailed(f"'{field}' cannot be changed.", details={"fields": {field: ["Read-only."]}})
            setattr(style, field, redact(value) if field == "visual_parameters" else value)
        style.save()
    return style


def style_delete(*, user: User, style: StyleTemplate) -> None:
    """Delete the owner's style and its usage history. Built-ins are read-only; runs that used it keep its id."""
    _own_style(user=user, style=style, verb="deleted")
    style.delete()


def style_copy(
    *, user: User, style: StyleTemplate, template_id: str | None = None, name: str | None = None
) -> StyleTemplate:
    """The user's own copy of a style they see (a built-in, or theirs), under ``template_id`` (default: the
    first free of ``<id>_copy``, ``<id>_copy_2``…), then theirs to change."""
    if template_id is None:
        base = f"{style.public_id}"[:56] + "_copy"
        taken = set(
            StyleTemplate.objects.filter(Q(owner=user) | Q(owner__isnull=True), public_id__startswith=base).values_list(
                "public_id", flat=True
            )
        )
        template_id = next(
            candidate
            for candidate in (base if number == 1 else f"{base}_{number}" for number in range(1, len(taken) + 2))
            if candidate not in taken
        )
    return style_create(
        user=user,
        template_id=template_id,
        name=name or style.name,
        prompt=style.prompt,
        negative_prompt=style.negative_prompt,
        visual_parameters=dict(style.visual_parameters),
        reference_examples=list(style.reference_examples),
    )


def style_usage_record(
    *, style: StyleTemplate, project: Project, user: User, workflow_id: uuid.UUID | str | None
) -> StyleUsage:
    return StyleUsage.objects.create(style=style, project=project, user=user, workflow_id=workflow_id)


def style_rate(*, style: StyleTemplate, project: Project, user: User, score: float) -> StyleUsage:
    """Record a satisfaction score (0-5) for the style in the project: on the user's latest unrated use of it
    there, else as a use of its own (a rating without a run is still feedback on the style)."""
    if not 0.0 <= score <= 5.0:
        raise ValidationFailed(
            "The satisfaction score is between 0 and 5.",
            details={"fields": {"satisfaction_score": ["Must be between 0 and 5."]}},
        )
    with transaction.atomic():
        usage = (
            StyleUsage.objects.select_for_update()
            .filter(style=style, project=project, user=user, satisfaction_score__isnull=True)
            .order_by("-used_at", "-id")
            .first()
        )
        if usage is None:
            usage = StyleUsage(style=style, project=project, user=user)
        usage.satisfaction_score = score
        usage.rated_at = timezone.now()
        usage.save()
        history_record(
            project=project,
            action=HistoryAction.STYLE_RATED,
            user=user,
            workflow_id=usage.workflow_id,
            details={"template_id": style.public_id, "satisfaction_score": score},
        )
    return usage


def style_rating_summary(*, style: StyleTemplate) -> dict[str, Any]:
    figures = style.usages.aggregate(uses=Count("id"), average=Avg("satisfaction_score"))
    rated = style.usages.filter(satisfaction_score__isnull=False).count()
    average = figures["average"]
    return {"uses": figures["uses"], "ratings": rated, "average_score": round(average, 2) if average else None}
