"""Write side of recall's meaning: the vectors of indexed texts, computed by the embeddings endpoint after the
index rows commit (``search_embed_task``, sent by ``search_entries_write``) or by ``search_embed_backfill``.

Vectors are keyed by (model key, text hash): a text is embedded once whatever number of rows share it, and a
redelivered task finds its texts stored and embeds nothing. The endpoint is called outside any transaction (an
HTTP call never holds a database lock); two workers that embed the same text at once both store it, the second
insert ignored by the unique key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from celery import current_app
from django.db import OperationalError, connection, transaction
from django.db.models import Exists, OuterRef, QuerySet

from memory_app.models import SEARCH_VECTOR_COLUMN, SearchEntry, SearchVector
from memory_app.providers.embeddings import EmbeddingsEndpoint, embed_texts, embeddings_endpoint
from memory_app.selectors.search_vectors import (
    pgvector_column_exists,
    pgvector_literal,
    vector_backend_forget,
    vectors_missing_count,
)

logger = logging.getLogger("memory_app.search")

SEARCH_EMBED_TASK = "memory_app.search_embed"
# Entry ids per task: a rebuild of a large index sends many small tasks rather than one that holds a worker.
ENTRIES_PER_TASK = 500


@dataclass(frozen=True)
class EmbedReport:
    embedded: int  # texts sent to the endpoint and stored
    remaining: int | None = None  # texts still without a vector (the backfill's count), None when not counted
    skipped: str | None = None  # why nothing was done (embeddings not configured)

    def as_dict(self) -> dict[str, object]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def search_embed_enqueue(entry_ids: Sequence[int]) -> None:
    """Once the caller's transaction commits, send the task that embeds these entries' texts (nothing when
    embeddings are not configured). A broker that cannot be reached loses only the send: the write stands and
    ``search_embed_backfill`` embeds what is missing."""
    if embeddings_endpoint() is None or not entry_ids:
        return
    ids = list(entry_ids)
    chunks = [ids[start : start + ENTRIES_PER_TASK] for start in range(0, len(ids), ENTRIES_PER_TASK)]

    def send() -> None:
        # By the registered task when this process has it, by name otherwise (memory_app.tasks imports services).
        task = current_app.tasks.get(SEARCH_EMBED_TASK)
        try:
            for chunk in chunks:
                if task is not None:
                    task.apply_async(args=(chunk,))
                else:
                    current_app.send_task(SEARCH_EMBED_TASK, args=(chunk,))
        except (OperationalError, OSError):
            logger.warning(
                "embedding of %d index rows not sent; search_embed_backfill embeds them", len(ids), exc_info=True
            )

    transaction.on_commit(send)


def search_embed_entries(*, entry_ids: Sequence[int]) -> EmbedReport:
    """Embed the texts of these index rows that have no vector yet (rows gone since are skipped)."""
    endpoint = embeddings_endpoint()
    if endpoint is None:
        return EmbedReport(embedded=0, skipped="embeddings are not configured")
    texts = _missing_texts(SearchEntry.objects.filter(id__in=list(entry_ids)), endpoint=endpoint, limit=None)
    return EmbedReport(embedded=_embed_and_store(texts, endpoint=endpoint))


def search_embed_backfill_batch(*, batch_size: int) -> EmbedReport:
    """Embed up to ``batch_size`` indexed texts that have no vector yet; ``remaining`` says how many are left."""
    endpoint = embeddings_endpoint()
    if endpoint is None:
        return EmbedReport(embedded=0, remaining=0, skipped="embeddings are not configured")
    texts = _missing_texts(SearchEntry.objects.all(), endpoint=endpoint, limit=batch_size)
    embedded = _embed_and_store(texts, endpoint=endpoint)
    remaining = vectors_missing_count(model_key=endpoint.model_key)
    return EmbedReport(embedded=embedded, remaining=remaining)


def _missing_texts(
    entries: QuerySet[SearchEntry], *, endpoint: EmbeddingsEndpoint, limit: int | None
) -> dict[str, str]:
    """Text hash -> text for ``entries`` with no vector of the endpoint's model key (each text once, at most
    ``limit`` texts)."""
    stored = SearchVector.objects.filter(model=endpoint.model_key, text_hash=OuterRef("text_hash"))
    missing = entries.filter(~Exists(stored)).order_by("id").values_list("text_hash", "text")
    texts: dict[str, str] = {}
    # Rows sharing a text need not come one after another: read on until ``limit`` distinct texts.
    for text_hash, text in missing.iterator(chunk_size=500):
        texts.setdefault(text_hash, text)
        if limit is not None and len(texts) >= limit:
            break
    return texts


def _embed_and_store(texts: dict[str, str], *, endpoint: EmbeddingsEndpoint) -> int:
    if not texts:
        return 0
    hashes = list(texts)
    vectors = embed_texts([texts[text_hash] for text_hash in hashes], endpoint=endpoint)
    search_vectors_store(model_key=endpoint.model_key, vectors=dict(zip(hashes, vectors, strict=True)))
    return len(hashes)


def search_vectors_store(*, model_key: str, vectors: dict[str, np.ndarray]) -> None:
    """Store unit-length vectors by text hash (one already there is kept), and their pgvector column where the
    database has one."""
    rows = [
        SearchVector(
            model=model_key,
            text_hash=text_hash,
            dimensions=int(vector.shape[0]),
            vector=np.ascontiguousarray(vector, dtype="<f4").tobytes(),
        )
        for text_hash, vector in vectors.items()
    ]
    with transaction.atomic():
        SearchVector.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
        if pgvector_column_exists():
            _pgvector_fill(model_key=model_key, vectors=vectors)


def _pgvector_fill(*, model_key: str, vectors: dict[str, np.ndarray]) -> None:
    table = connection.ops.quote_name(SearchVector._meta.db_table)
    column = connection.ops.quote_name(SEARCH_VECTOR_COLUMN)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET {column} = %s::vector "  # noqa: S608
            f"WHERE model = %s AND text_hash = %s AND {column} IS NULL",
            [(pgvector_literal(vector), model_key, text_hash) for text_hash, vector in vectors.items()],
        )


def search_vectors_pgvector_enable() -> bool:
    """On PostgreSQL whose server has pgvector (``pg_available_extensions``): the extension, the ``vector``
    column (what migration 0024 does when the extension was there at migrate time), and the column filled from
    the stored bytes. False where that cannot be (SQLite; no extension; no right to create it)."""
    from django.db import DatabaseError

    if connection.vendor != "postgresql":
        return False
    table = connection.ops.quote_name(SearchVector._meta.db_table)
    column = connection.ops.quote_name(SEARCH_VECTOR_COLUMN)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        if cursor.fetchone() is None:
            return False
        try:
            with transaction.atomic():
                cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
                cursor.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} vector")
        except DatabaseError:
            logger.warning("pgvector is available but could not be enabled", exc_info=True)
            return False
    vector_backend_forget()
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT model, text_hash, dimensions, vector FROM {table} "  # noqa: S608
                f"WHERE {column} IS NULL ORDER BY id LIMIT 500"
            )
            pending = cursor.fetchall()
        if not pending:
            return True
        for model_key in {row[0] for row in pending}:
            _pgvector_fill(
                model_key=model_key,
                vectors={
                    text_hash: np.frombuffer(bytes(vector), dtype="<f4", count=dimensions)
                    for model, text_hash, dimensions, vector in pending
                    if model == model_key
                },
            )
