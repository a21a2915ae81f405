"""Retrieval quality of lexical search on the labelled set (``tests/search/labelled_set.py``): recall@5 and MRR
are printed (``pytest -s`` shows them) and lexical recall@5 must stay at 0.8 or above, on SQLite and on PostgreSQL
alike (run with TEST_DATABASE_URL for the latter)."""

from __future__ import annotations

import pytest
from django.db import connection

from memory_app.selectors.search import memory_search
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
        f"records, recall@5 {result.recall_at_k:.3f}, MRR {result.mrr:.3f}"
    )
    for query, missing, top in result.misses:
        print(f"  {query}: missing {missing}; top 5 {top}")
    assert len(QUERIES) >= 50
    assert result.recall_at_k >= 0.8
    assert result.mrr >= 0.8
