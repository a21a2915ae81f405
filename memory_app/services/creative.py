"""Creative memory services (seed §6): character records, style templates, their usage and ratings."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, Q
from django.utils import timezone

from memory_app.errors import Conflict, ValidationFailed
from memory_app.models import Character, HistoryAction, Project, StyleTemplate, StyleUsage
from memory_app.redaction import redact
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
) -> tuple[Character, bool]:
    """Create the character, or update it without letting it drift: the features and colours it already has
    are kept (that is what "must stay the same" means); only new ones are added, aliases too. Returns
    (character, created)."""
    character = Character.objects.select_for_update().filter(project=project, name=name).first()
    if character is None:
        character = Character.objects.create(
            project=project,
            name=name,
            appearance_features=redact(appearance_features),
            consistent_features=list(consistent_features),
            personality_traits=list(personality_traits),
            colors=redact(dict(colors)),
            mentions=mentions,
            aliases=[alias for alias in dict.fromkeys(aliases or []) if alias != name],
        )
        return character, True
    character.appearance_features = {**redact(appearance_features), **character.appearance_features}
    character.colors = {**redact(dict(colors)), **character.colors}
    character.consistent_features = sorted(set(character.consistent_features) | set(consistent_features))
    character.personality_traits = list(dict.fromkeys([*character.personality_traits, *personality_traits]))
    character.mentions = character.mentions + mentions
    character.aliases = [alias for alias in dict.fromkeys([*character.aliases, *(aliases or [])]) if alias != name]
    character.save()
    return character, False


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
