"""Write side of recall: the index rows of messages, history records, characters and story texts, written in the
caller's transaction (so an object and its row commit or vanish together), and rebuilt by ``search_reindex``.

What each kind indexes (``*_search_text``): a message its content (summaries included: once archived messages
are deleted, the rolling summary is all that remains of them); a history record its summary plus the short
human-readable strings of its details (names, titles; not ids, hashes or long payloads); a character its name,
aliases, appearance, consistent features and personality; a run its input story (``data["text"]``; a fork or a
redraw shares its source's text and is not indexed again).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from memory_app.models import (
    SEARCH_KIND_FIELDS,
    Character,
    ContextMessage,
    ConversationContext,
    HistoryRecord,
    Project,
    SearchEntry,
    SearchKind,
    WorkflowState,
)
from memory_app.search_text import index_tokens, text_hash
from memory_app.services.search_vectors import search_embed_enqueue

# Details strings longer than this are payloads (a prompt, a JSON dump), not words a person would search for.
_DETAIL_TEXT_MAX_CHARS = 80
_DETAIL_TEXT_KEYS = 12


def search_entry_build(
    *,
    kind: SearchKind,
    object_id: object,
    owner_id: int,
    project_id: str | None,
    text: str,
    created_at: dt.datetime,
) -> SearchEntry:
    """An unsaved index row for one object (``object_id``: its primary key)."""
    return SearchEntry(
        kind=kind,
        owner_id=owner_id,
        project_id=project_id,
        text=text,
        tokens=index_tokens(text),
        text_hash=text_hash(text),
        created_at=created_at,
        **{SEARCH_KIND_FIELDS[kind] + "_id": object_id},
    )


def search_entries_write(entries: Iterable[SearchEntry]) -> list[SearchEntry]:
    """Insert ``entries`` (one statement), replacing the rows their objects had (an edited character); when
    embeddings are configured, their texts' vectors are computed after commit (``search_embed_task``)."""
    rows = list(entries)
    if not rows:
        return rows
    with transaction.atomic():
        for kind in {row.kind for row in rows}:
            field = SEARCH_KIND_FIELDS[kind]
            ids = [getattr(row, field + "_id") for row in rows if row.kind == kind]
            SearchEntry.objects.filter(kind=kind, **{field + "_id__in": ids}).delete()
        return search_entries_insert(rows)


def search_entries_insert(rows: Sequence[SearchEntry], *, batch_size: int | None = None) -> list[SearchEntry]:
    """Insert new index rows (their objects have none yet). When embeddings are configured, their texts' vectors
    are computed after commit, by a worker (``search_embed_task``)."""
    created = SearchEntry.objects.bulk_create(rows, batch_size=batch_size)
    search_embed_enqueue([row.pk for row in created])
    return created


def search_messages_indexed() -> bool:
    """Whether messages go into the index (``search.index_messages``)."""
    return bool(settings.MEMORY.search.index_messages)


def message_entries_build(*, context: ConversationContext, messages: Sequence[ContextMessage]) -> list[SearchEntry]:
    """The index rows of ``messages`` (saved, of ``context``); none when messages are not indexed."""
    if not search_messages_indexed():
        return []
    return [
        search_entry_build(
            kind=SearchKind.MESSAGE,
            object_id=message.pk,
            owner_id=context.owner_id,
            project_id=context.project_id,
            text=message.content,
            created_at=message.created_at,
        )
        for message in messages
    ]


def search_index_message(*, context: ConversationContext, message: ContextMessage) -> None:
    """Index (or re-index: a rolling summary rewritten in place) one message of ``context``."""
    search_entries_write(message_entries_build(context=context, messages=[message]))


def search_message_times_sync(*, context: ConversationContext) -> None:
    """Give the index rows of ``context``'s messages their messages' times again (an import replays the messages,
    then restores the file's times)."""
    SearchEntry.objects.filter(message__context=context).update(
        created_at=Subquery(ContextMessage.objects.filter(pk=OuterRef("message_id")).values("created_at")[:1])
    )


def _detail_strings(value: Any, found: list[str]) -> None:
    if len(found) >= _DETAIL_TEXT_KEYS:
        return
    if isinstance(value, str):
        text = value.strip()
        if text and len(text) <= _DETAIL_TEXT_MAX_CHARS and not text.startswith(("http://", "https://", "/")):
            found.append(text)
    elif isinstance(value, dict):
        # By key: PostgreSQL's jsonb gives keys back in its own order, and the text must not depend on it.
        for key, item in sorted(value.items(), key=lambda pair: str(pair[0])):
            if not str(key).endswith(("_id", "id", "hash", "checksum", "path", "url", "file", "file_name")):
                _detail_strings(item, found)
    elif isinstance(value, list):
        for item in value[:_DETAIL_TEXT_KEYS]:
            _detail_strings(item, found)


def history_search_text(record: HistoryRecord) -> str:
    """A record's summary, then the short readable strings of its details (a character's name, a run's title)."""
    strings: list[str] = []
    _detail_strings(record.details, strings)
    return "\n".join([record.summary, *dict.fromkeys(text for text in strings if text not in record.summary)])


def history_entries_build(records: Sequence[HistoryRecord]) -> list[SearchEntry]:
    """The index rows of ``records`` (saved); a system-wide record (no project, no user) has none: no one owns
    it."""
    entries = []
    owners = _project_owners({record.project_id for record in records if record.project_id is not None})
    for record in records:
        owner_id = owners.get(record.project_id) if record.project_id is not None else record.user_id
        if owner_id is None:
            continue
        entries.append(history_entry_build(record, owner_id=owner_id))
    return entries


def history_entry_build(record: HistoryRecord, *, owner_id: int) -> SearchEntry:
    """The index row of one record (saved or about to be: its key is set by whoever inserts it)."""
    return search_entry_build(
        kind=SearchKind.HISTORY,
        object_id=record.pk,
        owner_id=owner_id,
        project_id=record.project_id,
        text=history_search_text(record),
        created_at=record.timestamp,
    )


def _project_owners(project_ids: set[str]) -> dict[str | None, int]:
    if not project_ids:
        return {}
    return dict(Project.objects.filter(pk__in=project_ids).values_list("pk", "owner_id"))


def search_index_history(*, record: HistoryRecord, owner_id: int | None) -> None:
    """Index one new record; ``owner_id`` is its project's owner (the caller has the project at hand)."""
    owner_id = owner_id if owner_id is not None else record.user_id
    if owner_id is None:
        return
    search_entries_insert([history_entry_build(record, owner_id=owner_id)])


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value.strip():
            yield value.strip()
    elif isinstance(value, dict):
        for _key, item in sorted(value.items(), key=lambda pair: str(pair[0])):  # jsonb's key order is its own
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def character_search_text(character: Character) -> str:
    """The text that describes a character: name, other names, appearance, what never changes, personality."""
    parts = [
        character.name,
        " ".join(_strings(character.aliases)),
        " ".join(_strings(character.appearance_features)),
        " ".join(_strings(character.consistent_features)),
        " ".join(_strings(character.personality_traits)),
    ]
    return "\n".join(part for part in parts if part)


def character_entry_build(character: Character, *, owner_id: int) -> SearchEntry:
    return search_entry_build(
        kind=SearchKind.CHARACTER,
        object_id=character.pk,
        owner_id=owner_id,
        project_id=character.project_id,
        text=character_search_text(character),
        created_at=character.created_at or timezone.now(),
    )


def search_index_character(*, character: Character) -> None:
    """(Re-)index ``character`` after a create or an update, in the caller's transaction."""
    owner_id = character.project.owner_id
    search_entries_write([character_entry_build(character, owner_id=owner_id)])


def story_search_text(run: WorkflowState) -> str:
    text = run.data.get("text") if isinstance(run.data, dict) else None
    return text if isinstance(text, str) else ""


def story_entry_build(run: WorkflowState) -> SearchEntry | None:
    text = story_search_text(run)
    if not text.strip():
        return None
    return search_entry_build(
        kind=SearchKind.STORY,
        object_id=run.pk,
        owner_id=run.owner_id,
        project_id=run.project_id,
        text=text,
        created_at=run.created_at,
    )


def search_index_story(*, run: WorkflowState) -> None:
    """Index a new run's input story (a run without one has no row)."""
    entry = story_entry_build(run)
    if entry is not None:
        search_entries_insert([entry])


def _reindex_batches(kind: SearchKind, project: Project | None, batch_size: int) -> Iterator[list[SearchEntry]]:
    """The index rows of every object of ``kind`` (of ``project``), built in batches in primary-key order."""
    if kind == SearchKind.MESSAGE:
        messages = ContextMessage.objects.select_related("context").order_by("pk")
        if project is not None:
            messages = messages.filter(context__project=project)
        last: Any = None
        while batch := list((messages if last is None else messages.filter(pk__gt=last))[:batch_size]):
            last = batch[-1].pk
            entries: list[SearchEntry] = []
            for message in batch:
                entries += message_entries_build(context=message.context, messages=[message])
            yield entries
    elif kind == SearchKind.HISTORY:
        records = HistoryRecord.objects.order_by("pk")
        if project is not None:
            records = records.filter(project=project)
        last = None
        while batch_records := list((records if last is None else records.filter(pk__gt=last))[:batch_size]):
            last = batch_records[-1].pk
            yield history_entries_build(batch_records)
    elif kind == SearchKind.CHARACTER:
        characters = Character.objects.select_related("project").order_by("pk")
        if project is not None:
            characters = characters.filter(project=project)
        last = None
        while batch_characters := list((characters if last is None else characters.filter(pk__gt=last))[:batch_size]):
            last = batch_characters[-1].pk
            yield [character_entry_build(item, owner_id=item.project.owner_id) for item in batch_characters]
    else:
        # A fork or a redraw shares its source's story: only runs that started from a text of their own.
        runs = WorkflowState.objects.filter(forked_from__isnull=True).order_by("pk")
        if project is not None:
            runs = runs.filter(project=project)
        last = None
        while batch_runs := list((runs if last is None else runs.filter(pk__gt=last))[:batch_size]):
            last = batch_runs[-1].pk
            yield [entry for run in batch_runs if (entry := story_entry_build(run)) is not None]


def search_reindex(
    *, kinds: Sequence[str] = tuple(SearchKind.values), project: Project | None = None, batch_size: int = 500
) -> dict[str, int]:
    """Rebuild the index rows of ``kinds`` (of ``project``, else of everything), one transaction per batch, so
    a long rebuild never holds the database; idempotent (each batch replaces its objects' rows). Messages follow
    ``search.index_messages``: when it is false their rows are removed. Returns the rows written per kind."""
    written: dict[str, int] = {}
    for kind in [SearchKind(value) for value in kinds]:
        written[kind.value] = 0
        if kind == SearchKind.MESSAGE and not search_messages_indexed():
            stale = SearchEntry.objects.filter(kind=kind)
            if project is not None:
                stale = stale.filter(project=project)
            stale.delete()
            continue
        # Rows whose object is gone cannot exist (they cascade); rows of objects that no longer have text do.
        for entries in _reindex_batches(kind, project, batch_size):
            with transaction.atomic():
                written[kind.value] += len(search_entries_write(entries))
    return written
