"""Read side of the creative memory: characters (by project) and style templates (built in, or yours)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When

from memory_app.errors import Conflict, NotFound
from memory_app.models import Character, StyleTemplate, StyleUsage
from memory_app.selectors.ownership import scope_to_owner


def character_list(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Character]:
    # The API's project_id filter is memory_app.api.filters.CharacterFilterSet.
    return scope_to_owner(
        Character.objects.select_related("project").prefetch_related("references"),
        user=user,
        owner_field="project__owner",
    )


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


def character_records_known_as(*, project_id: str, forms: dict[str, list[str]]) -> dict[str, Character]:
    """For each character of a run (``{name: [name, *aliases]}``), its record in the project if it has one: the
    record with its name, else one named by an alias, else one whose aliases hold one of its names (a later
    chapter that says only 小雨 finds the record of 林小雨). Not scoped to a user: it serves a run, whose project
    was checked against its owner when it started."""
    wanted = {form for known in forms.values() for form in known}
    records = [
        character
        for character in Character.objects.filter(project_id=project_id)
        if character.name in wanted or wanted.intersection(character.aliases)
    ]
    by_name = {record.name: record for record in records}
    found: dict[str, Character] = {}
    for name, known in forms.items():
        record = next((by_name[form] for form in known if form in by_name), None)
        record = record or next((record for record in records if set(known).intersection(record.aliases)), None)
        if record is not None:
            found[name] = record
    return found


def style_list(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[StyleTemplate]:
    """Built-in templates (no owner) for everyone signed in, plus the user's own; staff see all."""
    if not user.is_authenticated:
        return StyleTemplate.objects.none()
    styles = StyleTemplate.objects.select_related("owner")
    if getattr(user, "is_staff", False):
        return styles
    return styles.filter(Q(owner__isnull=True) | Q(owner=user))


def style_get(*, user: AbstractBaseUser | AnonymousUser, template_id: str) -> StyleTemplate:
    """The style whose public id is ``template_id`` among those the user sees: their own, else the built-in one
    (a user cannot have both: a built-in's id is taken for everyone). Staff, who see all, reach another owner's
    style when it is the only one of that id; several is a Conflict that names the owners."""
    candidates = list(
        style_list(user=user)
        .filter(public_id=template_id)
        .annotate(
            rank=Case(
                When(owner_id=getattr(user, "pk", None), then=Value(0)),
                When(owner__isnull=True, then=Value(1)),
                default=Value(2),
                output_field=IntegerField(),
            )
        )
        .order_by("rank", "created_at", "template_id")[:3]
    )
    if candidates and (len(candidates) == 1 or candidates[0].rank < 2):
        return candidates[0]
    if candidates:
        owners = sorted(style.owner.get_username() for style in candidates if style.owner is not None)
        raise Conflict(
            f"Several owners have a style template '{template_id}'.",
            details={"template_id": template_id, "owners": owners, "suggestion": "Open it from the admin."},
        )
    raise NotFound(
        f"Style template '{template_id}' does not exist.",
        details={"template_id": template_id, "suggestion": "List the styles at /api/styles/."},
    )


def style_usage_list(*, user: AbstractBaseUser | AnonymousUser, style: StyleTemplate) -> QuerySet[StyleUsage]:
    """The usage history of a style that this user may see: their own projects' uses (staff: all)."""
    return scope_to_owner(style.usages.select_related("project"), user=user, owner_field="project__owner")
