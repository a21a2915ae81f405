"""Index rows for recall's tests, made as the write paths make them (``search_entries_write``)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from memory_app.models import SearchEntry, SearchKind
from memory_app.services.search import search_entries_write, search_entry_build
from tests.factories import HistoryRecordFactory


def index_history_texts(*, project, texts: list[str], start: dt.datetime | None = None) -> list[SearchEntry]:
    """One history record per text in ``project`` (its owner's), each indexed; the later the text, the newer."""
    start = start or timezone.now() - dt.timedelta(days=1)
    entries = []
    for number, text in enumerate(texts):
        created_at = start + dt.timedelta(minutes=number)
        record = HistoryRecordFactory(project=project, summary=text, timestamp=created_at)
        entries.append(
            search_entry_build(
                kind=SearchKind.HISTORY,
                object_id=record.pk,
                owner_id=project.owner_id,
                project_id=project.pk,
                text=text,
                created_at=created_at,
            )
        )
    return search_entries_write(entries)
