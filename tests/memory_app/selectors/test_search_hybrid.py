"""Recall by meaning: the vector ranking of the caller's candidates (exact scan; pgvector and sqlite-vec where this
machine has them), reciprocal rank fusion, and the degrade to words when the embeddings endpoint fails."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from memory_app.models import SearchVector
from memory_app.search_text import text_hash
from memory_app.selectors.operations import diagnose
from memory_app.selectors.search import fusion_depth, lexical_search, memory_search, rrf_fuse, search_candidates
from memory_app.selectors.search_vectors import (
    EXACT,
    PGVECTOR,
    SQLITE_VEC,
    exact_ranked,
    sqlite_can_load_extensions,
    vector_backend,
    vector_backend_forget,
    vector_ranked,
)
from memory_app.services.search_vectors import search_embed_backfill_batch, search_vectors_store
from tests.factories import ProjectFactory
from tests.fakes.openai_server import RawAnswer
from tests.support.search_entries import index_history_texts

pytestmark = pytest.mark.django_db

DIMENSIONS = 4


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def store(vectors: dict[str, np.ndarray], model: str = "fake-embed") -> None:
    search_vectors_store(model_key=model, vectors={text_hash(text): vector for text, vector in vectors.items()})


@pytest.fixture
def four_texts(project):
    texts = ["北方", "东方", "南方", "西方"]
    entries = index_history_texts(project=project, texts=texts)
    store(
        {
            "北方": unit(1, 0, 0, 0),
            "东方": unit(0.8, 0.6, 0, 0),
            "南方": unit(0, 0, 1, 0),
            "西方": unit(0.6, 0.8, 0, 0),
        }
    )
    return {entry.text: entry for entry in entries}


def test_the_exact_scan_ranks_by_cosine_similarity(user, four_texts):
    candidates = search_candidates(user=user)

    ranked = exact_ranked(unit(1, 0.1, 0, 0), model_key="fake-embed", candidates=candidates, limit=3)

    assert [entry_id for entry_id, _score in ranked] == [four_texts[t].pk for t in ("北方", "东方", "西方")]
    query = unit(1, 0.1, 0, 0)
    assert [score for _id, score in ranked] == pytest.approx(
        [float(query @ unit(*v)) for v in ((1, 0, 0, 0), (0.8, 0.6, 0, 0), (0.6, 0.8, 0, 0))], abs=1e-6
    )


def test_the_exact_scan_sees_only_the_candidates_and_the_same_model_and_size(user, other_user, four_texts):
    theirs = index_history_texts(project=ProjectFactory(owner=other_user), texts=["北方", "其他"])
    store({"其他": unit(1, 0, 0, 0)})
    store({"东方": unit(1, 0, 0, 0)}, model="other-model")
    store({"南方": np.ones(8, dtype=np.float32) / np.sqrt(8)})  # another size: ignored (already stored, kept)

    mine = exact_ranked(unit(1, 0, 0, 0), model_key="fake-embed", candidates=search_candidates(user=user), limit=10)
    both = exact_ranked(
        unit(1, 0, 0, 0), model_key="fake-embed", candidates=search_candidates(user=other_user), limit=10
    )

    assert {entry_id for entry_id, _ in mine} == {entry.pk for entry in four_texts.values()}
    # The other owner's "北方" shares the stored vector of the same text (embedded once); "其他" has its own.
    assert [entry_id for entry_id, _ in both] == [theirs[1].pk, theirs[0].pk]  # equal scores: newest first
    assert SearchVector.objects.filter(model="fake-embed").count() == 5


def test_texts_without_a_vector_are_left_out(user, project):
    entries = index_history_texts(project=project, texts=["有向量", "没有向量"])
    store({"有向量": unit(1, 0, 0, 0)})

    ranked = vector_ranked(unit(1, 0, 0, 0), model_key="fake-embed", candidates=search_candidates(user=user), limit=5)

    assert ranked == [(entries[0].pk, pytest.approx(1.0))]


def test_reciprocal_rank_fusion_on_a_hand_made_example():
    # Lexical ranks 1, 2, 3 = ids 10, 20, 30; by meaning 30, 10, 40.
    fused = rrf_fuse([[10, 20, 30], [30, 10, 40]], k=60)

    assert fused == [
        (10, pytest.approx(1 / 61 + 1 / 62)),
        (30, pytest.approx(1 / 63 + 1 / 61)),
        (20, pytest.approx(1 / 62)),
        (40, pytest.approx(1 / 63)),
    ]
    # Agreement wins: 2 (ranks 2 and 3: 1/3 + 1/4) passes 1 (one first place: 1/2), even with a small k.
    assert [item for item, _ in rrf_fuse([[1, 2, 3], [3, 4, 2]], k=1)] == [3, 2, 1, 4]
    # Equal sums: the better single rank, then the earlier ranking.
    assert [item for item, _ in rrf_fuse([[5, 6], [6, 5]], k=60)] == [5, 6]
    assert rrf_fuse([[], []], k=60) == []


def hybrid_story(project, fake_embeddings):
    """Three records: one with the query's word, one about the same thing in other words, one unrelated; the
    query's and texts' vectors are hand-made."""
    texts = ["小明的宝剑断成两截", "一把古老的兵器藏在山洞<深处>", "今天的晚饭是面条"]
    entries = index_history_texts(project=project, texts=texts)
    fake_embeddings.vectors.update(
        {
            "宝剑": [1.0, 0.0, 0.0, 0.0],
            texts[0]: [0.5, 0.0, 0.0, 0.866],
            texts[1]: [0.95, 0.31, 0.0, 0.0],
            texts[2]: [0.0, 0.0, 1.0, 0.0],
        }
    )
    assert search_embed_backfill_batch(batch_size=10).embedded == 3
    return entries


def test_hybrid_search_fuses_words_and_meaning(user, project, embeddings_configured, settings):
    sword, weapon, dinner = hybrid_story(project, embeddings_configured)

    results = memory_search("宝剑", user=user, limit=5)

    assert (results.mode, results.degraded) == ("hybrid", None)
    # By words: only the sword. By meaning: weapon (0.95), sword (0.5), dinner (0). Fused (k=60): the sword is
    # first by words and second by meaning; the weapon first by meaning alone.
    assert [hit.entry.pk for hit in results.hits] == [sword.pk, weapon.pk, dinner.pk]
    k = settings.MEMORY.search.rrf_k
    assert [hit.score for hit in results.hits] == pytest.approx([1 / (k + 1) + 1 / (k + 2), 1 / (k + 1), 1 / (k + 3)])
    assert results.hits[0].snippet == "小明的<mark>宝剑</mark>断成两截"
    # Found by meaning alone: the start of its text, escaped like every snippet.
    assert results.hits[1].snippet == "一把古老的兵器藏在山洞&lt;深处&gt;"
    assert embeddings_configured.embedding_requests[-1]["input"] == ["宝剑"]


def test_hybrid_search_keeps_to_the_callers_rows(user, other_user, project, embeddings_configured):
    hybrid_story(project, embeddings_configured)

    results = memory_search("宝剑", user=other_user, limit=5)

    assert (results.mode, results.hits) == ("hybrid", [])


def test_hybrid_search_before_any_vector_is_computed_answers_the_words(user, project, embeddings_configured):
    [sword, _dinner] = index_history_texts(project=project, texts=["小明的宝剑", "晚饭是面条"])

    results = memory_search("宝剑", user=user, limit=5)

    assert results.mode == "hybrid"
    assert [hit.entry.pk for hit in results.hits] == [sword.pk]


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        (lambda server: server.fail(500), "embeddings endpoint answered HTTP 500"),
        (lambda server: server.fail(401), "embeddings endpoint answered HTTP 401"),
        (lambda server: server.delay(2.5), "embeddings endpoint timed out"),
        (
            lambda server: server.reply_raw(RawAnswer(b"<html>oops</html>", content_type="text/html")),
            "embeddings endpoint unreachable or its answer cut short",
        ),
        (
            lambda server: server.reply_raw(RawAnswer(b'{"data": [{"embedding": "nope"}]}')),
            "embeddings endpoint answered something other than vectors",
        ),
    ],
    ids=["500", "401", "timeout", "html", "garbage"],
)
def test_a_failing_endpoint_degrades_to_the_words(user, project, embeddings_configured, plan, reason):
    hybrid_story(project, embeddings_configured)
    expected = [hit.entry.pk for hit in lexical_search("宝剑", candidates=search_candidates(user=user), limit=5)]
    plan(embeddings_configured)

    results = memory_search("宝剑", user=user, limit=5)

    assert (results.mode, results.degraded) == ("lexical", reason)
    assert [hit.entry.pk for hit in results.hits] == expected
    assert len(expected) == 1
    assert results.hits[0].snippet == "小明的<mark>宝剑</mark>断成两截"


def test_a_base_url_the_client_cannot_use_degrades_too(user, project, embeddings_configured, settings):
    index_history_texts(project=project, texts=["小明的宝剑"])
    embeddings = settings.MEMORY.search.embeddings.model_copy(update={"base_url": "not a url at all"})
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"search": settings.MEMORY.search.model_copy(update={"embeddings": embeddings})}
    )

    results = memory_search("宝剑", user=user, limit=5)

    assert results.mode == "lexical"
    assert results.degraded is not None and results.degraded.startswith("embeddings endpoint")
    assert len(results.hits) == 1


def test_without_embeddings_the_search_is_lexical_and_not_degraded(user, project, fake_embeddings):
    index_history_texts(project=project, texts=["小明的宝剑", "晚饭是面条"])

    results = memory_search("宝剑", user=user, limit=5)

    assert (results.mode, results.degraded, len(results.hits)) == ("lexical", None, 1)
    assert fake_embeddings.requests == []


def test_fusion_depth_grows_with_the_limit_within_bounds():
    assert [fusion_depth(limit) for limit in (1, 10, 50, 200)] == [40, 40, 200, 400]


def test_this_database_backend_is_reported(embeddings_configured):
    vector_backend_forget()
    backend = vector_backend()
    if connection.vendor == "sqlite":
        assert backend == (SQLITE_VEC if sqlite_can_load_extensions() else EXACT)
    else:
        assert backend in {PGVECTOR, EXACT}

    [finding] = [finding for finding in diagnose() if finding.check == "embeddings"]

    host = embeddings_configured.base_url.split("//")[1].split("/")[0]
    assert finding.message == f"fake-embed at {host}; vector backend {backend}; 0 indexed text(s) without a vector."
    assert finding.warning is False


def test_diagnose_says_when_embeddings_are_not_configured(db):
    [finding] = [finding for finding in diagnose() if finding.check == "embeddings"]

    assert finding.message == "not configured; recall is lexical only."
    assert finding.warning is False


def _rankings_agree(user, four_texts) -> None:
    candidates = search_candidates(user=user)
    query = unit(1, 0.1, 0, 0)
    in_database = vector_ranked(query, model_key="fake-embed", candidates=candidates, limit=4)
    exact = exact_ranked(query, model_key="fake-embed", candidates=candidates, limit=4)
    assert [entry_id for entry_id, _ in in_database] == [entry_id for entry_id, _ in exact]
    assert [score for _, score in in_database] == pytest.approx([score for _, score in exact], abs=1e-5)


def test_pgvector_ranks_like_the_exact_scan(user, project):
    if connection.vendor != "postgresql":
        pytest.skip("pgvector is PostgreSQL's: this run is on SQLite")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        if cursor.fetchone() is None:
            pytest.skip("this PostgreSQL server has no pgvector extension (pg_available_extensions): exact scan only")
    from memory_app.services.search_vectors import search_vectors_pgvector_enable

    texts = index_history_texts(project=project, texts=["北方", "东方", "南方", "西方"])
    store({"北方": unit(1, 0, 0, 0), "东方": unit(0.8, 0.6, 0, 0)})  # before the column: filled by enable
    assert search_vectors_pgvector_enable() is True
    store({"南方": unit(0, 0, 1, 0), "西方": unit(0.6, 0.8, 0, 0)})  # after: written with the column

    assert vector_backend() == PGVECTOR
    _rankings_agree(user, {entry.text: entry for entry in texts})


def test_sqlite_vec_ranks_like_the_exact_scan(user, four_texts):
    if connection.vendor != "sqlite":
        pytest.skip("sqlite-vec is SQLite's: this run is on PostgreSQL")
    if not sqlite_can_load_extensions():
        pytest.skip("this Python's sqlite3 was built without extension loading: exact scan only")
    vector_backend_forget()

    assert vector_backend() == SQLITE_VEC
    _rankings_agree(user, four_texts)
