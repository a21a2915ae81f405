"""Recall for a pipeline run: the project's earlier story texts and characters that best match a query, as plain
dicts (the pipelines import no models). One search through ``memory_search``; the run's own story is never one of
its hits."""

from __future__ import annotations

from html import unescape
from typing import TypedDict

from django.contrib.auth import get_user_model

from memory_app.models import Project, SearchKind
from memory_app.selectors.search import MARK_CLOSE, MARK_OPEN, memory_search


class RecallHit(TypedDict):
    kind: str  # "stories" or "characters"
    id: str  # the run's UUID for a story, the character's number
    snippet: str  # with the matched words marked <mark>…</mark> (escaped text), as the search API shows it
    text: str  # the snippet as plain text, for a prompt
    name: str | None  # a character's name; None for a story


class RunRecall(TypedDict):
    query: str
    hits: list[RecallHit]
    mode: str
    degraded: str | None


def plain_snippet(snippet: str) -> str:
    """A marked snippet as plain text."""
    return unescape(snippet.replace(MARK_OPEN, "").replace(MARK_CLOSE, ""))


def run_recall_search(*, owner_id: int, project_key: str, workflow_id: str, query: str, limit: int) -> RunRecall:
    """The ``limit`` best story texts and characters of the project (``project_key``: ``Project.pk``) for
    ``query``, as the run's owner may see them, without the story of the run ``workflow_id`` itself. Not
    validated here: the pipeline builds the query."""
    owner = get_user_model().objects.get(pk=owner_id)
    results = memory_search(
        query,
        user=owner,
        kinds=[SearchKind.STORY, SearchKind.CHARACTER],
        project=Project(pk=project_key),
        limit=limit + 1,  # room for the run's own story, dropped below
    )
    hits: list[RecallHit] = []
    for hit in results.hits:
        entry = hit.entry
        if entry.kind == SearchKind.STORY and str(entry.workflow_id) == str(workflow_id):
            continue
        hits.append(
            {
                "kind": entry.kind,
                "id": entry.object_id,
                "snippet": hit.snippet,
                "text": plain_snippet(hit.snippet),
                "name": entry.character.name if entry.kind == SearchKind.CHARACTER and entry.character else None,
            }
        )
    return {"query": query, "hits": hits[:limit], "mode": results.mode, "degraded": results.degraded}
