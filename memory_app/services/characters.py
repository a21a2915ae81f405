"""Characters as their owner edits them: create, change, delete, merge, revert, each change a version.

What a person sets is locked (``Character.locked_fields``): a path per appearance feature or colour key
(``appearance_features.hair``, ``colors.hair``: set, changed or removed by a person) and a whole list field
(``personality_traits``, ``consistent_features``). ``character_design_merge`` is the one rule automatic design
follows: a locked path is never changed (a key a person removed is not added back), a key the record already
has is kept (a character does not drift), and only new keys and list values are added.

Names and aliases are unique within a project, across both: a name resolves to one character.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max

from memory_app.errors import Conflict, NotFound, ValidationFailed
from memory_app.models import ChangeSource, Character, CharacterVersion, HistoryAction, Project
from memory_app.redaction import redact
from memory_app.services.history import history_record
from memory_app.services.search import search_index_character

DICT_FIELDS = ("appearance_features", "colors")
LIST_FIELDS = ("consistent_features", "personality_traits")
# The fields a version holds and a revert restores (reference images are files with their own history records).
VERSIONED_FIELDS = ("name", "aliases", *DICT_FIELDS, *LIST_FIELDS, "locked_fields")


def character_state(character: Character) -> dict[str, Any]:
    """The editable state of a character, as a version's snapshot holds it."""
    return {field: _copy(getattr(character, field)) for field in VERSIONED_FIELDS}


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value


def character_design_merge(record: dict[str, Any] | None, design: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``design`` (an automatic design) merged into ``record`` (a character's state, or None for a
    new character): see the module's docstring. Pure; the pipeline uses it for its prompts, the service to store."""
    if record is None:
        return {
            field: _copy(design.get(field) or ({} if field in DICT_FIELDS else []))
            for field in (*DICT_FIELDS, *LIST_FIELDS)
        }
    locked = set(record.get("locked_fields") or [])
    merged: dict[str, Any] = {}
    for field in DICT_FIELDS:
        kept = dict(record.get(field) or {})
        for key, value in (design.get(field) or {}).items():
            if key not in kept and f"{field}.{key}" not in locked:
                kept[key] = value
        merged[field] = kept
    for field in LIST_FIELDS:
        values = list(record.get(field) or [])
        if field not in locked:
            values += [value for value in design.get(field) or [] if value not in values]
            if field == "consistent_features":
                values = sorted(values)  # a set of feature names; sorted, so a re-run stores the same list
        merged[field] = values
    return merged


def character_person_set(record: dict[str, Any], design: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``design`` (a run's design) with what a person set on the record (its locked paths) taken
    from the record as it is now: a person who edits a character while a run waits (``pause_after``) sees the
    run draw their edit. Pure, like ``character_design_merge``."""
    locked = set(record.get("locked_fields") or [])
    fields = {field: _copy(design.get(field) or {}) for field in DICT_FIELDS}
    fields.update({field: _copy(design.get(field) or []) for field in LIST_FIELDS})
    for field in DICT_FIELDS:
        current = record.get(field) or {}
        for key in (path.split(".", 1)[1] for path in locked if path.startswith(f"{field}.")):
            if key in current:
                fields[field][key] = current[key]
            else:
                fields[field].pop(key, None)  # a person removed it
    for field in LIST_FIELDS:
        if field in locked:
            fields[field] = _copy(record.get(field) or [])
    return fields


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        field: {"before": before.get(field), "after": after.get(field)}
        for field in VERSIONED_FIELDS
        if before.get(field) != after.get(field)
    }


def character_version_record(
    *,
    character: Character,
    action: str,
    source: ChangeSource,
    before: dict[str, Any],
    user: User | None = None,
    workflow_id: uuid.UUID | str | None = None,
    extra: dict[str, Any] | None = None,
) -> CharacterVersion:
    """Append the next version of ``character`` (whose row the caller holds locked, so numbers are sequential),
    and re-index it: every change of a character is recorded here."""
    search_index_character(character=character)
    after = character_state(character)
    latest = CharacterVersion.objects.filter(character=character).aggregate(latest=Max("version"))["latest"]
    return CharacterVersion.objects.create(
        character=character,
        version=(latest or 0) + 1,
        action=action,
        source=source,
        user=user if user is not None and user.is_authenticated else None,
        workflow_id=workflow_id,
        changes={**_changes(before, after), **(extra or {})},
        snapshot=after,
    )


def _lock_project(project: Project) -> None:
    # Names and aliases are unique across a project's characters: changes of them in one project go one at a time.
    Project.objects.select_for_update().filter(pk=project.pk).first()


def _locked(character: Character) -> Character:
    """The character's row, locked; gone meanwhile (deleted or merged by another request) is a 404."""
    found = Character.objects.select_for_update().filter(pk=character.pk).first()
    if found is None:
        raise NotFound(f"Character '{character.pk}' does not exist.", details={"character_id": character.pk})
    return found


def _names_check(*, project: Project, names: list[str], exclude: int | None = None) -> None:
    """A Conflict if one of ``names`` is another character's name or alias (in ``project``), or repeats."""
    if len(set(names)) != len(names):
        raise ValidationFailed(
            "A character's name and aliases must all differ.",
            details={"fields": {"aliases": ["Repeats a name or another alias."]}},
        )
    others = Character.objects.filter(project=project)
    if exclude is not None:
        others = others.exclude(pk=exclude)
    for other_pk, other_name, other_aliases in others.values_list("pk", "name", "aliases"):
        clash = sorted(set(names) & {other_name, *other_aliases})
        if clash:
            raise Conflict(
                f"'{clash[0]}' already names another character of this project.",
                details={"name": clash[0], "character_id": other_pk},
            )


def _person_locks(character: Character, fields: dict[str, Any]) -> list[str]:
    """The locked paths after a person set ``fields``: every key they set or removed, every list they set."""
    locked = set(character.locked_fields)
    for field, value in fields.items():
        if field in DICT_FIELDS:
            before = getattr(character, field) or {}
            locked |= {f"{field}.{key}" for key in set(value) | set(before) if value.get(key) != before.get(key)}
            locked |= {f"{field}.{key}" for key in value}
        elif field in LIST_FIELDS or field == "aliases":
            locked.add(field)  # a run then adds no alias a person did not give (nor one they removed)
    return sorted(locked)


@transaction.atomic
def character_create(*, user: User, project: Project, name: str, **fields: Any) -> Character:
    """A character a person creates: everything they set is locked. Its name and aliases must be free."""
    _lock_project(project)
    aliases = list(fields.get("aliases") or [])
    _names_check(project=project, names=[name, *aliases])
    character = Character(project=project, name=name, aliases=aliases)
    clean = {
        field: redact(value) for field, value in fields.items() if field in (*DICT_FIELDS, *LIST_FIELDS, "aliases")
    }
    character.locked_fields = _person_locks(character, clean)
    for field, value in clean.items():
        setattr(character, field, value)
    before = dict.fromkeys(VERSIONED_FIELDS)
    character.save()
    character_version_record(
        character=character, action="created", source=ChangeSource.PERSON, before=before, user=user
    )
    history_record(
        project=project,
        action=HistoryAction.CHARACTER_CREATED,
        user=user,
        details={"character_id": character.pk, "name": name},
    )
    return character


@transaction.atomic
def character_update(*, user: User, character: Character, fields: dict[str, Any]) -> Character:
    """A person's change (PATCH): the fields given replace the stored ones and become locked. A change that
    changes nothing records no version."""
    # The project first, then the character: the order every service here takes them in (no deadlock).
    _lock_project(character.project)
    character = _locked(character)
    if "name" in fields or "aliases" in fields:
        _names_check(
            project=character.project,
            names=[fields.get("name", character.name), *fields.get("aliases", character.aliases)],
            exclude=character.pk,
        )
    before = character_state(character)
    clean = {field: redact(value) if field in DICT_FIELDS else value for field, value in fields.items()}
    character.locked_fields = _person_locks(character, clean)
    for field, value in clean.items():
        setattr(character, field, value)
    if character_state(character) == before:
        return character
    character.save()
    version = character_version_record(
        character=character, action="updated", source=ChangeSource.PERSON, before=before, user=user
    )
    history_record(
        project=character.project,
        action=HistoryAction.CHARACTER_UPDATED,
        user=user,
        details={
            "character_id": character.pk,
            "name": character.name,
            "version": version.version,
            "fields": sorted(version.changes),
        },
    )
    return character


@transaction.atomic
def character_revert(*, user: User, character: Character, version: int) -> Character:
    """A new version equal to version ``version`` (a person's change: its state is as they chose it)."""
    _lock_project(character.project)
    character = _locked(character)
    old = CharacterVersion.objects.filter(character=character, version=version).first()
    if old is None:
        raise ValidationFailed(
            f"Character {character.pk} has no version {version}.",
            details={
                "fields": {"version": [f"No version {version}; list them at /api/characters/{character.pk}/versions/."]}
            },
        )
    snapshot = old.snapshot
    _names_check(project=character.project, names=[snapshot["name"], *snapshot["aliases"]], exclude=character.pk)
    before = character_state(character)
    for field in VERSIONED_FIELDS:
        setattr(character, field, _copy(snapshot[field]))
    character.save()
    new = character_version_record(
        character=character,
        action="reverted",
        source=ChangeSource.PERSON,
        before=before,
        user=user,
        extra={"reverted_to": version},
    )
    history_record(
        project=character.project,
        action=HistoryAction.CHARACTER_REVERTED,
        user=user,
        details={"character_id": character.pk, "name": character.name, "version": new.version, "reverted_to": version},
    )
    return character


@transaction.atomic
def character_merge(*, user: User, character: Character, into: Character) -> Character:
    """``character`` becomes an alias of ``into``: its name and aliases join ``into``'s, the features ``into``
    lacks are added (``into``'s own win), its reference images move, and the record goes. Later runs that find
    the merged name draw ``into``. Both must be characters of one project, and two."""
    if character.pk == into.pk:
        raise ValidationFailed(
            "A character cannot be merged into itself.", details={"fields": {"into": ["Another character's id."]}}
        )
    if character.project_id != into.project_id:
        raise ValidationFailed(
            "Only characters of the same project can be merged.",
            details={"fields": {"into": ["A character of the same project."]}},
        )
    _lock_project(into.project)
    # Both rows locked in a fixed order (by id): two merges of the same pair in opposite directions cannot
    # deadlock, and the loser finds its character gone.
    locked = {
        item.pk: item
        for item in Character.objects.select_for_update().filter(pk__in=[character.pk, into.pk]).order_by("pk")
    }
    if len(locked) != 2:
        raise Conflict("The character was deleted or merged meanwhile.", details={"character_id": character.pk})
    source, target = locked[character.pk], locked[into.pk]
    before = character_state(target)
    merged_aliases = [name for name in [*target.aliases, source.name, *source.aliases] if name != target.name]
    target.aliases = list(dict.fromkeys(merged_aliases))
    added = character_design_merge(before, character_state(source))
    for field, value in added.items():
        setattr(target, field, value)
    target.locked_fields = sorted(set(target.locked_fields) | set(source.locked_fields))
    target.mentions += source.mentions
    moved = 0
    kept_sha = set(target.references.values_list("sha256", flat=True))
    for reference in source.references.all():
        if reference.sha256 not in kept_sha:
            reference.character = target
            reference.save(update_fields=["character"])
            moved += 1
    source_id, source_name = source.pk, source.name
    source.delete()  # its duplicate references go with it; their files stay (``target`` has the same content)
    target.save()
    version = character_version_record(
        character=target,
        action="merged",
        source=ChangeSource.PERSON,
        before=before,
        user=user,
        extra={"merged": {"character_id": source_id, "name": source_name}},
    )
    history_record(
        project=target.project,
        action=HistoryAction.CHARACTER_MERGED,
        user=user,
        details={
            "character_id": target.pk,
            "name": target.name,
            "merged_character_id": source_id,
            "merged_name": source_name,
            "version": version.version,
            "references_moved": moved,
        },
    )
    return target


def character_delete(*, user: User, character: Character) -> None:
    """Delete the character, its versions and reference records; files no other reference uses go after commit."""
    from memory_app.services.character_references import reference_files_release

    with transaction.atomic():
        character = _locked(character)
        names = list(character.references.values_list("storage_name", flat=True))
        project, character_id, name = character.project, character.pk, character.name
        character.delete()
        history_record(
            project=project,
            action=HistoryAction.CHARACTER_DELETED,
            user=user,
            details={"character_id": character_id, "name": name, "references": len(names)},
        )
        reference_files_release(storage_names=names)


def _design_aliases(*, project: Project, character: Character, aliases: list[str]) -> list[str]:
    """The character's aliases with those a run found added: never its own name, never a name or alias another
    character of the project holds (names stay unique), never when a person set the aliases (locked)."""
    if "aliases" in character.locked_fields:
        return list(character.aliases)
    others = Character.objects.filter(project=project).exclude(pk=character.pk).values_list("name", "aliases")
    taken = {name for other_name, other_aliases in others for name in (other_name, *other_aliases)}
    found = [alias for alias in aliases if alias != character.name and alias not in taken]
    return list(dict.fromkeys([*character.aliases, *found]))


def character_design_store(
    *,
    project: Project,
    design: dict[str, Any],
    user: User | None,
    workflow_id: uuid.UUID | str | None,
) -> tuple[Character, bool]:
    """An automatic design stored (a run's ``character_design``): the character named (or aliased)
    ``design["name"]`` gets what ``character_design_merge`` allows; a new one is created unlocked. A change is
    a version whose source is the run. Returns (character, created). Call inside the step's transaction."""
    name = design["name"]
    _lock_project(project)
    character = Character.objects.select_for_update().filter(project=project, name=name).first()
    if character is None:
        character = next(
            (item for item in Character.objects.select_for_update().filter(project=project) if name in item.aliases),
            None,
        )
    created = character is None
    if character is None:
        character = Character(project=project, name=name)
        before = dict.fromkeys(VERSIONED_FIELDS)
        merged = character_design_merge(None, design)
    else:
        before = character_state(character)
        merged = character_design_merge(before, design)
    for field, value in merged.items():
        setattr(character, field, redact(value) if field in DICT_FIELDS else value)
    character.aliases = _design_aliases(project=project, character=character, aliases=design.get("aliases") or [])
    character.mentions = character.mentions + int(design.get("mentions") or 0)
    character.save()
    if created or character_state(character) != before:
        character_version_record(
            character=character,
            action="created" if created else "designed",
            source=ChangeSource.RUN,
            before=before,
            user=user,
            workflow_id=workflow_id,
        )
    return character, created
