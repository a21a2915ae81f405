"""Read side of recall: lexical search over the index (SQLite FTS5 with bm25; PostgreSQL full-text search with
ts_rank_cd), limited to what the caller may see (staff: everything), fused with the meaning search
(``memory_app.selectors.search_vectors``) when an embeddings endpoint is configured.

``lexical_search`` answers ranked ``SearchHit``s: the entry, its score (higher is better) and a snippet with the
matched words marked. Callers that combine it with other rankings (the meaning search) use the order, not the
score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.models import SEARCH_FTS_TABLE, ConversationContext, Project, SearchEntry, SearchKind
from memory_app.providers.embeddings import embed_texts, embeddings_endpoint
from memory_app.search_text import query_words
from memory_app.selectors.ownership import scope_to_owner
from memory_app.selectors.search_vectors import vector_ranked

logger = logging.getLogger("memory_app.search")

SNIPPET_CHARS = 160
# How many of the newest matches a query ranks: a word found in most of a long chat would otherwise make every
# search rank all of them. Rarer words (fewer matches than this) are ranked over all their matches.
RANK_WINDOW = 1_000
# How many of the database's best are read to put those holding more of the query's words first.
RERANK_DEPTH = 40
MARK_OPEN, MARK_CLOSE = "<mark>", "</mark>"


@dataclass(frozen=True)
class SearchHit:
    entry: SearchEntry
    score: float
    snippet: str


@dataclass(frozen=True)
class SearchResults:
    """Ranked hits and how they were found: ``mode`` is "lexical" or "hybrid"; ``degraded`` says why a hybrid
    search fell back to words alone (the embeddings endpoint failed), else None."""

    hits: list[SearchHit]
    mode: str = "lexical"
    degraded: str | None = None


def memory_search(
    query: str,
    *,
    user: AbstractBaseUser | AnonymousUser,
    kinds: Sequence[str] = tuple(SearchKind.values),
    project: Project | None = None,
    limit: int = 10,
    archived_only: bool = False,
    context: ConversationContext | None = None,
) -> SearchResults:
    """The one search entry point (the API, generate's recall, the pipelines' recall): the ``limit`` best of what
    ``user`` may see for ``query``. Input is checked by the caller (the API answers 400 on bad input).

    With an embeddings endpoint configured the search is hybrid: the query is embedded (at once, within the
    endpoint's timeout), the best ``fusion_depth(limit)`` hits by words and by meaning are fused by reciprocal
    rank. When the endpoint fails (an error, a timeout, an answer that is not vectors) the words alone answer,
    with ``degraded`` saying why: a search never fails because of the endpoint.

    ``context``: only that conversation's messages (generate's recall).
    """
    candidates = search_candidates(
        user=user, kinds=kinds, project=project, archived_only=archived_only, context=context
    )
    endpoint = embeddings_endpoint()
    if endpoint is None:
        return SearchResults(hits=lexical_search(query, candidates=candidates, limit=limit))
    depth = fusion_depth(limit)
    lexical = lexical_search(query, candidates=candidates, limit=depth)
    try:
        [query_vector] = embed_texts([query], endpoint=endpoint)
    except ProviderError as exc:
        logger.warning("search degraded to words alone: %s", exc.message)
        return SearchResults(hits=lexical[:limit], mode="lexical", degraded=_degraded_reason(exc))
    except Exception:  # whatever else the client met (a base URL it cannot use): the words still answer
        logger.warning("search degraded to words alone", exc_info=True)
        return SearchResults(hits=lexical[:limit], mode="lexical", degraded="embeddings endpoint failed")
    by_meaning = vector_ranked(query_vector, model_key=endpoint.model_key, candidates=candidates, limit=depth)
    fused = rrf_fuse(
        [[hit.entry.pk for hit in lexical], [entry_id for entry_id, _score in by_meaning]],
        k=settings.MEMORY.search.rrf_k,
    )[:limit]
    known = {hit.entry.pk: hit for hit in lexical}
    entries = candidates.in_bulk([entry_id for entry_id, _score in fused if entry_id not in known])
    words = query_words(query)
    hits = []
    for entry_id, score in fused:
        if entry_id in known:
            hits.append(SearchHit(entry=known[entry_id].entry, score=score, snippet=known[entry_id].snippet))
        elif entry_id in entries:
            # Found by meaning alone: the snippet is the start of its text (with any query word marked).
            hits.append(SearchHit(entry=entries[entry_id], score=score, snippet=snippet(entries[entry_id].text, words)))
    return SearchResults(hits=hits, mode="hybrid")


def fusion_depth(limit: int) -> int:
    """How many hits of each ranking are fused for ``limit`` results: enough that a result ranked low by one
    ranking and high by the other can reach the top."""
    return min(max(limit * 4, 40), 400)


def rrf_fuse(rankings: Sequence[Sequence[int]], *, k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each id scores the sum over the rankings that hold it of 1 / (k + rank), rank from
    1. Best first; a tie goes to the id with the better single rank, then to the earlier ranking's order."""
    scores: dict[int, float] = {}
    best: dict[int, tuple[int, int]] = {}
    for ranking_number, ranking in enumerate(rankings):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            best[item] = min(best.get(item, (rank, ranking_number)), (rank, ranking_number))
    return sorted(scores.items(), key=lambda pair: (-pair[1], best[pair[0]]))


def _degraded_reason(exc: ProviderError) -> str:
    status = exc.details.get("status")
    if status is not None:
        return f"embeddings endpoint answered HTTP {status}"
    if "timed out" in exc.message:
        return "embeddings endpoint timed out"
    if isinstance(exc, RetryableProviderError):
        return "embeddings endpoint unreachable or its answer cut short"
    return "embeddings endpoint answered something other than vectors"


def search_candidates(
    *,
    user: AbstractBaseUser | AnonymousUser,
    kinds: Sequence[str] = tuple(SearchKind.values),
    project: Project | None = None,
    archived_only: bool = False,
    context: ConversationContext | None = None,
) -> QuerySet[SearchEntry]:
    """The index rows ``user`` may find: their own (staff: all), of ``kinds``, of ``project`` when given, of
    ``context``'s messages when given."""
    entries = scope_to_owner(SearchEntry.objects.all(), user=user).filter(kind__in=list(kinds))
    if project is not None:
        entries = entries.filter(project=project)
    if context is not None:
        entries = entries.filter(kind=SearchKind.MESSAGE, message__context=context)
    if archived_only:
        entries = entries.filter(kind=SearchKind.MESSAGE, message__archived=True)
    return entries


def lexical_search(
    query: str,
    *,
    candidates: QuerySet[SearchEntry],
    limit: int,
) -> list[SearchHit]:
    """The ``limit`` best rows of ``candidates`` for ``query``'s words (any of them). The database ranks them
    (bm25, ts_rank_cd: rarer words and shorter texts weigh more); among its best ``RERANK_DEPTH`` (at least), a row
    holding more of the query's words comes first, so a short text naming one of two words does not pass a long
    one naming both."""
    words = query_words(query)
    if not words or limit <= 0:
        return []
    depth = max(limit * 4, RERANK_DEPTH)
    if connection.vendor == "sqlite":
        ranked = _sqlite_ranked(words, limit=depth, candidates=candidates)
    elif connection.vendor == "postgresql":
        ranked = _postgres_ranked(words, limit=depth, candidates=candidates)
    else:  # pragma: no cover - the project runs on SQLite and PostgreSQL
        raise NotImplementedError(connection.vendor)
    entries = candidates.select_related("project").in_bulk([entry_id for entry_id, _score in ranked])
    wanted = set(words)
    # The score: how many of the query's words the row holds, plus the database's rank scaled below 1.
    found = [
        (entry, len(wanted.intersection(entry.tokens.split())) + max(score, 0) / (1 + max(score, 0)))
        for entry_id, score in ranked
        if (entry := entries.get(entry_id)) is not None
    ]
    found.sort(key=lambda pair: -pair[1])  # stable: the database's order among equals
    return [SearchHit(entry=entry, score=score, snippet=snippet(entry.text, words)) for entry, score in found[:limit]]


def _sqlite_ranked(words: list[str], *, limit: int, candidates: QuerySet[SearchEntry]) -> list[tuple[int, float]]:
    match = " OR ".join('"' + word + '"' for word in words)
    # Each match checked against the scope by its primary key (a correlated subquery): given ``rowid IN (scope)``
    # instead, SQLite hands every id of the scope to FTS5, which runs the MATCH once per id.
    scope_sql, scope_params = (
        candidates.order_by()
        .filter(pk=RawSQL(f"{SEARCH_FTS_TABLE}.rowid", ()))  # noqa: S611 - a constant name
        .values("id")
        .query.sql_with_params()
    )
    # The newest RANK_WINDOW matches in the caller's scope (FTS5 walks its matches newest first and stops there),
    # then ranked by bm25 among themselves.
    sql = (
        f"WITH hits AS MATERIALIZED (SELECT rowid AS id, bm25({SEARCH_FTS_TABLE}) AS rank "  # noqa: S608
        f"FROM {SEARCH_FTS_TABLE} WHERE {SEARCH_FTS_TABLE} MATCH %s AND EXISTS ({scope_sql}) "
        "ORDER BY rowid DESC LIMIT %s) "
        "SELECT id, rank FROM hits ORDER BY rank, id DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [match, *scope_params, RANK_WINDOW, limit])
        # bm25() is lower-is-better and negative: the score is its negation.
        return [(row_id, -float(rank)) for row_id, rank in cursor.fetchall()]


def _postgres_ranked(words: list[str], *, limit: int, candidates: QuerySet[SearchEntry]) -> list[tuple[int, float]]:
    tsquery = " | ".join("'" + word.replace("'", "''").replace("\\", "") + "'" for word in words)
    # search_vector: the stored to_tsvector('simple', tokens) (migration 0024), parsed once per row written. The
    # scope's conditions sit in the same WHERE as the match (no sort of the scope, no semi-join), the newest
    # RANK_WINDOW matches are taken (for a frequent word the planner walks the primary key backwards and stops
    # there; for a rare one it takes the GIN index), then ranked among themselves.
    matches = RawSQL("search_vector @@ to_tsquery('simple', %s)", (tsquery,), output_field=BooleanField())
    recent_sql, recent_params = (
        candidates.order_by()
        .filter(matches)
        .annotate(rank=RawSQL("ts_rank_cd(search_vector, to_tsquery('simple', %s))", (tsquery,)))
        .order_by("-id")
        .values("id", "rank")[:RANK_WINDOW]
        .query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, rank FROM ({recent_sql}) AS recent ORDER BY rank DESC, id DESC LIMIT %s",  # noqa: S608
            [*recent_params, limit],
        )
        return [(row_id, float(rank)) for row_id, rank in cursor.fetchall()]


def snippet(text: str, words: Sequence[str], *, width: int = SNIPPET_CHARS) -> str:
    """A window of ``text`` around its first matched word, each match marked ``<mark>…</mark>`` (the text is
    escaped first, so the marks are the only markup)."""
    from html import escape

    lowered = text.lower()
    found = sorted(
        (position, word) for word in sorted(set(words), key=len, reverse=True) if (position := lowered.find(word)) >= 0
    )
    start = max(0, found[0][0] - width // 4) if found else 0
    window = text[start : start + width]
    spans: list[tuple[int, int]] = []
    lowered_window = window.lower()
    for word in sorted(set(words), key=len, reverse=True):
        begin = lowered_window.find(word)
        while begin >= 0:
            end = begin + len(word)
            if not any(begin < other_end and other_begin < end for other_begin, other_end in spans):
                spans.append((begin, end))
            begin = lowered_window.find(word, end)
    pieces: list[str] = ["…" if start else ""]
    cursor = 0
    for begin, end in sorted(spans):
        pieces += [escape(window[cursor:begin]), MARK_OPEN, escape(window[begin:end]), MARK_CLOSE]
        cursor = end
    pieces.append(escape(window[cursor:]))
    if start + width < len(text):
        pieces.append("…")
    return "".join(pieces)
