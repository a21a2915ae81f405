"""Target 7: recall's exact vector scan (PostgreSQL without pgvector, SQLite without extension loading) at a few
candidate counts and vector sizes.

The scan must read every candidate's vector from the database, then score them: its baseline is the least any
exact scan does, one raw SELECT of the same vectors and a bare numpy product with top-k (limit: 2 times). Each row's
extra also gives the bare numpy product over the same vectors already in memory (``numpy_ms``,
``ratio_to_numpy``: the price of reading, which grows with count * dimensions * 4 bytes) and whether the scan stays
within ``SCAN_MS_BOUND`` per search; docs/recall-embeddings.md says up to what size it does.
"""

from __future__ import annotations

import numpy as np

from bench.core import Result, Sizes, median, result, timed, timed_pair

# Our scan at most this many times a raw read + numpy product of the same vectors; and the time a search may
# spend on its meaning ranking.
RATIO_LIMIT = 2.0
SCAN_MS_BOUND = 250.0
TOP = 40  # what the hybrid search asks of the meaning ranking for 10 results (fusion_depth(10))


def _fill(*, count: int, dimensions: int, seed: int) -> tuple[object, str, np.ndarray]:
    """``count`` indexed history texts of one user, each with a random unit vector of ``dimensions``."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from memory_app.models import HistoryRecord, Project, SearchEntry, SearchKind, SearchVector
    from memory_app.search_text import text_hash

    user_model = get_user_model()
    user_model.objects.filter(username="bench-vectors").delete()  # cascades: projects, records, index rows
    user = user_model.objects.create(username="bench-vectors", password="!")
    project = Project.objects.create(id="bench-vectors", public_id="bench-vectors", owner=user, name="vectors")
    now = timezone.now()
    records = HistoryRecord.objects.bulk_create(
        [
            HistoryRecord(project=project, timestamp=now, action="text_analyzed", summary=f"记录 {index}", details={})
            for index in range(count)
        ],
        batch_size=2000,
    )
    model_key = f"bench@{dimensions}"
    SearchVector.objects.filter(model=model_key).delete()
    texts = [f"记录 {index} / {dimensions}" for index in range(count)]
    SearchEntry.objects.bulk_create(
        [
            SearchEntry(
                kind=SearchKind.HISTORY,
                owner=user,
                project=project,
                history=record,
                text=text,
                tokens=text,
                text_hash=text_hash(text),
                created_at=now,
            )
            for record, text in zip(records, texts, strict=True)
        ],
        batch_size=2000,
    )
    generator = np.random.default_rng(seed)
    matrix = generator.standard_normal((count, dimensions)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    SearchVector.objects.bulk_create(
        [
            SearchVector(model=model_key, text_hash=text_hash(text), dimensions=dimensions, vector=row.tobytes())
            for text, row in zip(texts, matrix, strict=True)
        ],
        batch_size=1000,
    )
    # Statistics for the rows just written, as autovacuum gives a table in service: without them the planner
    # takes the fresh vectors for one row and scans the owner's entries once per vector (1.4 s instead of 12 ms
    # at 10,000 x 256).
    from django.db import connection

    with connection.cursor() as cursor:
        for model in (SearchEntry, SearchVector):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
    return user, model_key, matrix


def run(*, sizes: Sizes, log) -> list[Result]:
    from django.contrib.auth import get_user_model

    results = []
    for count, dimensions in sizes.vector_scans:
        log(f"vectors: {count} x {dimensions}")
        results.append(_measure(count=count, dimensions=dimensions, repeats=sizes.vector_repeats))
    get_user_model().objects.filter(username="bench-vectors").delete()
    return results


def _measure(*, count: int, dimensions: int, repeats: int) -> Result:
    from django.db import connection

    from memory_app.models import SearchVector
    from memory_app.selectors.search import search_candidates
    from memory_app.selectors.search_vectors import exact_ranked

    user, model_key, matrix = _fill(count=count, dimensions=dimensions, seed=count + dimensions)
    query = matrix[count // 2] * 0.9 + matrix[count // 3] * 0.1
    query = (query / np.linalg.norm(query)).astype(np.float32)
    candidates = search_candidates(user=user)
    table = connection.ops.quote_name(SearchVector._meta.db_table)
    raw_sql = f"SELECT vector FROM {table} WHERE model = %s"  # noqa: S608 - a constant table name

    def scan() -> list[tuple[int, float]]:
        return exact_ranked(query, model_key=model_key, candidates=candidates, limit=TOP)

    def numpy_only() -> np.ndarray:
        scores = matrix @ query
        return np.argpartition(-scores, TOP - 1)[:TOP]

    def raw_read_and_numpy() -> np.ndarray:
        with connection.cursor() as cursor:
            cursor.execute(raw_sql, [model_key])
            rows = cursor.fetchall()
        read = np.frombuffer(b"".join(row[0] for row in rows), dtype="<f4").reshape(len(rows), dimensions)
        scores = read @ query
        return np.argpartition(-scores, TOP - 1)[:TOP]

    found = scan()  # also the warm-up
    assert len(found) == TOP and found[0][1] >= found[-1][1]
    raw_read_and_numpy()
    repeats = max(3, min(repeats, 200_000 // count))
    scan_samples, raw_samples = timed_pair(scan, raw_read_and_numpy, repeats)
    scan_ms, raw_ms = median(scan_samples) * 1e3, median(raw_samples) * 1e3
    numpy_ms = median(timed(numpy_only, max(repeats, 20))) * 1e3
    SearchVector.objects.filter(model=model_key).delete()
    return result(
        target="8",
        name=f"exact vector scan, {count:,} x {dimensions} ({connection.vendor})",
        measured=scan_ms,
        baseline=raw_ms,
        unit="ms",
        baseline_name="raw SELECT of the same vectors + numpy top-k",
        limit=RATIO_LIMIT,
        comparison="<=",
        scan_ms=round(scan_ms, 2),
        scan_ms_bound=SCAN_MS_BOUND,
        within_scan_ms_bound=scan_ms <= SCAN_MS_BOUND,
        numpy_ms=round(numpy_ms, 3),
        ratio_to_numpy=round(scan_ms / numpy_ms, 1) if numpy_ms > 0 else None,
        megabytes_read=round(count * dimensions * 4 / 1e6, 1),
    )
