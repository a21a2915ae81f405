"""Read side of the creative memory: characters (by project) and style templates (built in, or yours)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from memory_app.errors import NotFound
from memory_app.models import Character, StyleTemplate, StyleUsage
from memory_app.selectors.ownership import scope_to_owner


def character_list(*, user: AbstractBaseUser | AnonymousUser, project_id: str | None = None) -> QuerySet[Character]:
    characters = scope_to_owner(Character.objects.select_related("project"), user=user, owner_field="project__owner")
    if project_id is not None:
        characters = characters.filter(project_id=project_id)
    return characters


def character_get(*, user: AbstractBaseUser | AnonymousUser, character_id: str) -> Character:
    # ASCII digits only, and within a 64-bit key: "²" passes str.isdigit() but not int(), and a longer number
    # overflows the column on every backend.
    numeric = character_id.isascii() and character_id.isdigit() and len(character_id) < 19
    character = character_list(user=user).filter(pk=int(character_id)).first() if numeric else None
    if character is None:
        raise NotFound(
            f"Character '{character_id}' does not exist.",
            details={"character_id": character_id, "suggestion": "List your characters at /api/characters/."},
        )
    return character


def style_list(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[StyleTemplate]:
    """Built-in templates (no owner) for everyone signed in, plus the user's own; staff see all."""
    if not user.is_authenticated:
        return StyleTemplate.objects.none()
    if getattr(user, "is_staff", False):
        return StyleTemplate.objects.all()
    return StyleTemplate.objects.filter(Q(owner__isnull=True) | Q(owner=user))


def style_get(*, user: AbstractBaseUser | AnonymousUser, template_id: str) -> StyleTemplate:
    style = style_list(user=user).filter(pk=template_id).first()
    if style is None:
        raise NotFound(
            f"Style template '{template_id}' does not exist.",
            details={"template_id": template_id, "suggestion": "List the styles at /api/styles/."},
        )
    return style


def style_usage_list(*, user: AbstractBaseUser | AnonymousUser, style: StyleTemplate) -> QuerySet[StyleUsage]:
    """The usage history of a style that this user may see: their own projects' uses (staff: all)."""
    return scope_to_owner(style.usages.all(), user=user, owner_field="project__owner")
