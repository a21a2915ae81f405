"""Read side of recall's meaning: the stored vectors of the caller's candidates ranked by cosine similarity to a
query's vector, by the best backend this database has.

- ``pgvector``: PostgreSQL with the extension and the ``embedding`` column (migration 0024, or
  ``search_embed_backfill`` once the extension is there): ``<=>`` orders the candidates' vectors in the server.
- ``sqlite-vec``: SQLite when this Python's sqlite3 may load extensions (many builds may not) and the sqlite-vec
  package is installed: ``vec_distance_cosine`` over the stored float32 bytes, in the database.
- ``exact``: everywhere else (PostgreSQL without the extension, as in CI; SQLite without extension loading): the
  candidates' vectors are read and scored with one numpy matrix product. See docs/recall-embeddings.md for the
  candidate counts up to which it stays fast.

All three score every candidate (no approximate index): the candidates are one owner's rows, which an approximate
index over everybody's vectors would filter after the fact and so miss.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np
from django.db import connection
from django.db.models import QuerySet

from memory_app.models import SEARCH_VECTOR_COLUMN, SearchEntry, SearchVector

PGVECTOR, SQLITE_VEC, EXACT = "pgvector", "sqlite-vec", "exact"

# The reader's view of the database, per database (alias and name): a column added later by the backfill command
# is seen by this process after ``vector_backend_forget()`` or a restart; meanwhile the exact scan answers.
_backends: dict[tuple[str, str], str] = {}


def vector_backend() -> str:
    """Which backend ranks vectors on this process's database: "pgvector", "sqlite-vec" or "exact"."""
    key = (connection.alias, str(connection.settings_dict.get("NAME")))
    if key not in _backends:
        _backends[key] = _detect()
    return _backends[key]


def vector_backend_forget() -> None:
    _backends.clear()


def pgvector_column_exists() -> bool:
    """The ``vector`` column is on the vectors' table (so the extension is installed in this database)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s AND column_name = %s",
            [SearchVector._meta.db_table, SEARCH_VECTOR_COLUMN],
        )
        return cursor.fetchone() is not None


def sqlite_can_load_extensions() -> bool:
    """This Python's sqlite3 was built with extension loading and the sqlite-vec package is installed."""
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        return False
    try:
        import sqlite_vec  # noqa: F401
    except ImportError:
        return False
    return True


def _detect() -> str:
    if connection.vendor == "postgresql":
        return PGVECTOR if pgvector_column_exists() else EXACT
    if connection.vendor == "sqlite" and sqlite_can_load_extensions():
        try:
            _load_sqlite_vec()
        except Exception:  # noqa: BLE001 - a build that refuses the library: the exact scan answers instead
            return EXACT
        return SQLITE_VEC
    return EXACT


def _load_sqlite_vec() -> None:
    """Load sqlite-vec into this thread's SQLite connection, once per underlying connection."""
    import sqlite_vec

    connection.ensure_connection()
    raw: Any = connection.connection
    if getattr(connection, "_sqlite_vec_loaded_into", None) is raw:
        return
    raw.enable_load_extension(True)
    try:
        sqlite_vec.load(raw)
    finally:
        raw.enable_load_extension(False)
    connection._sqlite_vec_loaded_into = raw  # type: ignore[attr-defined]


def vector_ranked(
    query_vector: np.ndarray, *, model_key: str, candidates: QuerySet[SearchEntry], limit: int
) -> list[tuple[int, float]]:
    """The ``limit`` candidates whose text's vector (by ``model_key``) is closest to ``query_vector`` (unit
    length), as (entry id, cosine similarity), best first; ties: newest first. Candidates without a vector of this
    model and size are left out."""
    if limit <= 0:
        return []
    query_vector = np.ascontiguousarray(query_vector, dtype="<f4")
    backend = vector_backend()
    if backend == PGVECTOR:
        return _pgvector_ranked(query_vector, model_key=model_key, candidates=candidates, limit=limit)
    if backend == SQLITE_VEC:
        return _sqlite_vec_ranked(query_vector, model_key=model_key, candidates=candidates, limit=limit)
    return exact_ranked(query_vector, model_key=model_key, candidates=candidates, limit=limit)


def exact_ranked(
    query_vector: np.ndarray, *, model_key: str, candidates: QuerySet[SearchEntry], limit: int
) -> list[tuple[int, float]]:
    """The exact scan: every candidate text's vector read (distinct texts once), one matrix product, the best
    texts' entries."""
    dimensions = int(query_vector.shape[0])
    rows = list(
        SearchVector.objects.filter(
            model=model_key, dimensions=dimensions, text_hash__in=candidates.values("text_hash")
        ).values_list("text_hash", "vector")
    )
    if not rows:
        return []
    hashes = [text_hash for text_hash, _vector in rows]
    matrix = np.frombuffer(b"".join(vector for _hash, vector in rows), dtype="<f4").reshape(len(rows), dimensions)
    scores = matrix @ query_vector
    # The best ``limit`` texts are enough: each is at least one entry.
    best = np.argpartition(-scores, limit - 1)[:limit] if len(rows) > limit else np.arange(len(rows))
    score_of = {hashes[index]: float(scores[index]) for index in best}
    entries = candidates.filter(text_hash__in=list(score_of)).values_list("id", "text_hash", "created_at")
    ranked = sorted(entries, key=lambda row: (-score_of[row[1]], -row[2].timestamp(), -row[0]))
    return [(entry_id, score_of[text_hash]) for entry_id, text_hash, _created in ranked[:limit]]


def _joined(candidates: QuerySet[SearchEntry]) -> tuple[str, str, str, list[Any]]:
    entries = connection.ops.quote_name(SearchEntry._meta.db_table)
    vectors = connection.ops.quote_name(SearchVector._meta.db_table)
    scope_sql, scope_params = candidates.values("id").query.sql_with_params()
    return entries, vectors, scope_sql, list(scope_params)


def _sqlite_vec_ranked(
    query_vector: np.ndarray, *, model_key: str, candidates: QuerySet[SearchEntry], limit: int
) -> list[tuple[int, float]]:
    _load_sqlite_vec()
    entries, vectors, scope_sql, scope_params = _joined(candidates)
    sql = (
        f"SELECT e.id, vec_distance_cosine(v.vector, %s) AS distance FROM {entries} e "  # noqa: S608
        f"JOIN {vectors} v ON v.text_hash = e.text_hash AND v.model = %s AND v.dimensions = %s "
        f"WHERE e.id IN ({scope_sql}) ORDER BY distance, e.created_at DESC, e.id DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [query_vector.tobytes(), model_key, int(query_vector.shape[0]), *scope_params, limit])
        return [(entry_id, 1.0 - float(distance)) for entry_id, distance in cursor.fetchall()]


def pgvector_literal(vector: np.ndarray) -> str:
    """A vector as pgvector's text input ("[0.1,0.2,...]")."""
    return "[" + ",".join(repr(value) for value in vector.astype(np.float64).tolist()) + "]"


def _pgvector_ranked(
    query_vector: np.ndarray, *, model_key: str, candidates: QuerySet[SearchEntry], limit: int
) -> list[tuple[int, float]]:
    entries, vectors, scope_sql, scope_params = _joined(candidates)
    column = connection.ops.quote_name(SEARCH_VECTOR_COLUMN)
    # ``dimensions`` is filtered in the join: ``<=>`` between vectors of different sizes is an error, and a model
    # key names one size.
    sql = (
        f"SELECT e.id, v.{column} <=> %s::vector AS distance FROM {entries} e "  # noqa: S608
        f"JOIN {vectors} v ON v.text_hash = e.text_hash AND v.model = %s AND v.dimensions = %s "
        f"WHERE v.{column} IS NOT NULL AND e.id IN ({scope_sql}) "
        "ORDER BY distance, e.created_at DESC, e.id DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql, [pgvector_literal(query_vector), model_key, int(query_vector.shape[0]), *scope_params, limit]
        )
        return [(entry_id, 1.0 - float(distance)) for entry_id, distance in cursor.fetchall()]


def vectors_missing_count(*, model_key: str) -> int:
    """Distinct indexed texts with no vector of ``model_key`` yet."""
    stored = SearchVector.objects.filter(model=model_key).values("text_hash")
    return SearchEntry.objects.exclude(text_hash__in=stored).values("text_hash").distinct().count()
