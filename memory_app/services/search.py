"""Write side of recall: the index rows of messages, history records, characters and story texts, written in the
caller's transaction (so an object and its row commit or vanish together), and rebuilt by ``search_reindex``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db import transaction

from memory_app.models import SEARCH_KIND_FIELDS, SearchEntry, SearchKind
from memory_app.search_text import index_tokens, text_hash
from memory_app.services.search_vectors import search_embed_enqueue


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
        created = SearchEntry.objects.bulk_create(rows)
        # Their vectors are computed after commit, by a worker (nothing when embeddings are not configured).
        search_embed_enqueue([row.pk for row in created])
        return created
