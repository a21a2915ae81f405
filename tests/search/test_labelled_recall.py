"""Retrieval quality of lexical and hybrid search on the labelled set (``tests/search/labelled_set.py``): recall@5
and MRR are printed (``pytest -s`` shows them) and recall@5 must stay at 0.8 or above, on SQLite and on PostgreSQL
alike (run with TEST_DATABASE_URL for the latter)."""

from __future__ import annotations

import pytest
from django.db import connection

from memory_app.models import SearchEntry, SearchVector
from memory_app.selectors.search import memory_search
from memory_app.services.search_vectors import search_embed_backfill_batch
from tests.factories import UserFactory
from tests.search.labelled_set import QUERIES, labelled_set_load, measure

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_lexical_recall_at_5_on_the_labelled_set():
    owner = UserFactory(username="author")
    loaded = labelled_set_load(owner=owner)

    def lexical(query: str) -> list[tuple[str, str]]:
        return [(hit.entry.kind, hit.entry.object_id) for hit in memory_search(query, user=owner, limit=10).hits]

    result = measure(loaded, lexical)

    print(
        f"\nlexical search on {connection.vendor}: {len(QUERIES)} queries over {len(loaded.objects)} labelled "
        f"records and {loaded.distractors} unlabelled ones, recall@5 {result.recall_at_k:.3f}, MRR {result.mrr:.3f}"
    )
    for query, missing, top in result.misses:
        print(f"  {query}: missing {missing}; top 5 {top}")
    assert len(QUERIES) >= 50
    assert result.recall_at_k >= 0.8
    assert result.mrr >= 0.8


def test_hybrid_recall_at_5_on_the_labelled_set(embeddings_configured):
    """The same set with meaning beside the words: every row embedded by the fake embeddings server (hashed
    character n-grams, a test double whose "meaning" is spelling), the search fused by reciprocal rank, held to the
    same bounds as the words alone."""
    owner = UserFactory(username="author")
    loaded = labelled_set_load(owner=owner)
    while search_embed_backfill_batch(batch_size=200).embedded:
        pass
    assert not SearchEntry.objects.exclude(
        text_hash__in=SearchVector.objects.values("text_hash")
    ).exists()  # every row has its vector

    modes: set[str] = set()

    def hybrid(query: str) -> list[tuple[str, str]]:
        results = memory_search(query, user=owner, limit=10)
        modes.add(results.mode)
        return [(hit.entry.kind, hit.entry.object_id) for hit in results.hits]

    result = measure(loaded, hybrid)
    print(
        f"\nhybrid search on {connection.vendor}: {len(QUERIES)} queries, recall@5 {result.recall_at_k:.3f}, "
        f"MRR {result.mrr:.3f}"
    )
    for query, missing, top in result.misses:
        print(f"  {query}: missing {missing}; top 5 {top}")
    assert modes == {"hybrid"}
    assert result.recall_at_k >= 0.8
    assert result.mrr >= 0.8
