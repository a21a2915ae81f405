"""Recall across chapters (``preferences.recall: true``): the project's earlier story texts and characters that
match this run's characters and places, found once per run and kept in ``data.recall``, fed into script generation
and character design (comic) and into character extraction and plot summarization (compression).

The query is this run's main characters (and their other names) and the places its text names (jieba's place
tag); a text that names neither asks with its beginning. The search is ``memory_search`` over the project's
``stories`` and ``characters`` (``search.pipeline_top_k`` hits), never this run's own story. ``data.recall``:
``{query, hits: [{kind, id, snippet, text, name}], places, mode, degraded}``, ``places`` being those the
recalled stories name.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from memory_app.selectors.recall import RunRecall, run_recall_search
from workflows.engine import StepContext
from workflows.pipelines.common import run_owner
from workflows.providers import text

# The most recalled lines a panel's script carries as continuity notes.
MAX_NOTES = 3


def recall_query(source: str, *, forms: dict[str, list[str]]) -> str:
    """Names and places of ``source`` as one query, within ``search.max_query_chars``."""
    limit = settings.MEMORY.search.max_query_chars
    words = [form for known in forms.values() for form in known] + text.places_in(source)
    query = " ".join(dict.fromkeys(words)) or source.strip()
    return query[:limit]


def run_recall(context: StepContext, *, forms: dict[str, list[str]]) -> dict[str, Any] | None:
    """``data.recall`` of the run: None without ``preferences.recall``; found by an earlier step, or now, for the
    run's text and its characters' names (``forms``)."""
    if not context.preferences.get("recall"):
        return None
    if isinstance(context.data.get("recall"), dict):
        return dict(context.data["recall"])
    found: RunRecall = run_recall_search(
        owner_id=run_owner(context).pk,
        project_key=context.project_id,
        workflow_id=context.workflow_id,
        query=recall_query(str(context.data.get("text", "")), forms=forms),
        limit=settings.MEMORY.search.pipeline_top_k,
    )
    places = [place for hit in found["hits"] if hit["kind"] == "stories" for place in text.places_in(hit["text"])]
    return {**found, "places": list(dict.fromkeys(places))}


def recalled_lines(recall: dict[str, Any] | None) -> list[str]:
    """Every hit as one line for a prompt: "<name>: …" for a character, the story's snippet for a story."""
    if not recall:
        return []
    return [f"{hit['name']}: {hit['text']}" if hit.get("name") else hit["text"] for hit in recall["hits"]]


def continuity_notes(segment: str, *, recall: dict[str, Any] | None, forms: dict[str, list[str]]) -> list[str]:
    """The recalled lines that concern ``segment``: they name a character or a place the segment names."""
    if not recall:
        return []
    named = [form for known in forms.values() for form in known if form in segment]
    named += [place for place in recall.get("places", []) if place in segment]
    lines = recalled_lines(recall)
    return [line for line in lines if any(word in line for word in named)][:MAX_NOTES]


def mentioning(recall: dict[str, Any] | None, forms: list[str]) -> list[dict[str, Any]]:
    """The recalled hits that name one of ``forms`` (a character's names)."""
    if not recall:
        return []
    return [hit for hit in recall["hits"] if hit.get("name") in forms or any(form in hit["text"] for form in forms)]
