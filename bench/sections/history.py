"""Targets 2 and 3: history append at growing sizes against the seed's month-file design (§3.3), and the
history API's pages and timeline on the largest project."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from bench.core import BENCH_DIR, Result, Sizes, median, result, timed, timed_pair

ACTIONS = [
    "workflow_started",
    "workflow_step_completed",
    "workflow_completed",
    "context_created",
    "messages_appended",
    "cache_cleared",
    "character_created",
    "text_analyzed",
]
# Existing records go back from here, one every 30 seconds (a million of them cover almost a year).
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SPACING_SECONDS = 30


def _fill(project_id: str, start: int, end: int) -> None:
    """Insert records ``start .. end-1`` of the project, oldest last; done by the database, in big batches."""
    from django.db import connection, transaction

    from memory_app.models import HistoryRecord

    if start >= end:
        return
    table = HistoryRecord._meta.db_table
    if connection.vendor == "postgresql":
        batch = 200_000
        for low in range(start, end, batch):
            high = min(end, low + batch)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {table} (project_id, timestamp, action, summary, details, request_id) "  # noqa: S608
                    "SELECT %s, %s::timestamptz - g * interval '30 seconds', (%s::text[])[1 + g %% 8], "
                    "'Bench record ' || g, '{\"segment\": 1, \"model\": \"offline\"}'::jsonb, '' "
                    "FROM generate_series(%s, %s) AS g",
                    [project_id, BASE, ACTIONS, low, high - 1],
                )
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")
        return
    rows = (
        HistoryRecord(
            project_id=project_id,
            timestamp=BASE - dt.timedelta(seconds=SPACING_SECONDS * number),
            action=ACTIONS[number % len(ACTIONS)],
            summary=f"Bench record {number}",
            details={"segment": 1, "model": "offline"},
        )
        for number in range(start, end)
    )
    HistoryRecord.objects.bulk_create(rows, batch_size=5_000)


def _reference_append(path: Path) -> None:
    """The seed's ``_save_history`` (§3.3): read the month's JSON file, append one record, rewrite the file."""
    history = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    history.append(
        {
            "timestamp": dt.datetime.now().isoformat(),
            "action": "workflow_step_completed",
            "details": {"step": "image_generation", "segment": 3},
            "user_id": None,
        }
    )
    path.write_text(json.dumps(history, ensure_ascii=False, indent=2), encoding="utf-8")


def _reference_file(size: int) -> Path:
    folder = BENCH_DIR / "reference" / "projects" / "bench-history" / "processing"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"history_{size}.json"
    records = [
        {
            "timestamp": (BASE - dt.timedelta(seconds=SPACING_SECONDS * number)).isoformat(),
            "action": ACTIONS[number % len(ACTIONS)],
            "details": {"segment": 1, "model": "offline"},
            "user_id": None,
        }
        for number in range(size)
    ]
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def run(*, sizes: Sizes, log: callable) -> list[Result]:  # type: ignore[valid-type]
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from memory_app.models import HistoryRecord, Project
    from memory_app.services.history import history_record

    user, _ = get_user_model().objects.get_or_create(username="bench-history")
    token, _ = Token.objects.get_or_create(user=user)
    HistoryRecord.objects.filter(project_id="bench-history").delete()
    Project.objects.filter(pk="bench-history").delete()
    project = Project.objects.create(
        id="bench-history", public_id="bench-history", owner=user, name="History benchmark"
    )

    ours: dict[int, float] = {}
    reference: dict[int, float] = {}
    bare: dict[int, float] = {}
    filled = 0
    for size in sizes.history_sizes:
        log(f"history: filling to {size} records")
        _fill(project.pk, filled, size)
        filled = size
        details = {"step": "image_generation", "segment": 3, "api_key": "sk-secret", "duration_ms": 812}
        samples = timed(
            lambda details=details: history_record(
                project=project, action="workflow_step_completed", details=details, user=user
            ),
            sizes.history_appends,
        )
        ours[size] = median(samples)
        # The bare baseline: one single-row INSERT and commit on the same table.
        with connection.cursor() as cursor:

            def insert(cursor=cursor) -> None:
                cursor.execute(
                    f"INSERT INTO {HistoryRecord._meta.db_table} (project_id, timestamp, action, summary, "  # noqa: S608
                    "details, request_id) VALUES (%s, %s, %s, %s, %s, %s)",
                    [project.pk, BASE, "bench", "bare", "{}", ""],
                )

            bare[size] = median(timed(insert, sizes.history_appends))
        log(f"history: reference design at {size}")
        path = _reference_file(size)
        repeats = sizes.reference_repeats if size < 1_000_000 else 1
        reference[size] = median(timed(lambda path=path: _reference_append(path), repeats))
        path.unlink()

    smallest, largest = sizes.history_sizes[0], sizes.history_sizes[-1]
    middle = sizes.history_sizes[-2]
    results = [
        result(
            target="2",
            name=f"history append at {largest:,} records vs at {smallest}",
            measured=ours[largest] * 1000,
            baseline=ours[smallest] * 1000,
            unit="ms",
            baseline_name=f"history append at {smallest} records",
            limit=1.5,
            comparison="<=",
            per_size_ms={str(size): round(ours[size] * 1000, 3) for size in ours},
            bare_insert_ms={str(size): round(bare[size] * 1000, 3) for size in bare},
        ),
        result(
            target="2",
            name=f"seed month file (§3.3) vs ours at {middle:,} records",
            measured=reference[middle] * 1000,
            baseline=ours[middle] * 1000,
            unit="ms",
            baseline_name=f"our history append at {middle:,}",
            limit=100,
            comparison=">=",
            reference_per_size_ms={str(size): round(reference[size] * 1000, 3) for size in reference},
        ),
    ]

    log("history: API on the largest project")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    first_day = (BASE - dt.timedelta(days=60)).date().isoformat()
    last_day = (BASE - dt.timedelta(days=30)).date().isoformat()
    queries = [
        ("first history page (50)", f"/api/memory/history/{project.pk}?limit=50", 20.0),
        (
            "filtered page (action + date range)",
            f"/api/memory/history/{project.pk}?limit=50&action_type=workflow_completed"
            f"&start_date={first_day}&end_date={last_day}",
            30.0,
        ),
        ("timeline summary", f"/api/memory/timeline/{project.pk}", 50.0),
    ]
    for label, url, limit_ms in queries:

        def get(url: str = url) -> None:
            response = client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}: {response.content[:300]!r}")

        get()  # warm: the first request loads the URLconf and the serializers
        replay = _raw_replay(get)
        replay()
        api_samples, raw_samples = timed_pair(get, replay, sizes.api_repeats)
        p50, raw_p50 = median(api_samples) * 1000, median(raw_samples) * 1000
        results.append(
            result(
                target="3",
                name=f"API {label}, {filled:,} records, p50",
                measured=p50,
                baseline=raw_p50,
                unit="ms",
                baseline_name=f"its {len(replay.statements)} SQL statements raw on the same connection",
                limit=2.0,
                comparison="<=",
                former_absolute_bound_ms=limit_ms,
                statements=replay.statements,
            )
        )
    return results


class _Replay:
    """The statements one request ran, run again as raw SQL on the same connection (through psycopg's own cursor
    on PostgreSQL), every row fetched: the request's figure over this one is what Django and DRF add."""

    def __init__(self, statements: list[tuple[str, tuple]]) -> None:
        self._statements = statements
        self.statements = [sql for sql, _params in statements]

    def __call__(self) -> None:
        from django.db import connection

        if connection.vendor == "postgresql":
            with connection.connection.cursor() as cursor:
                for sql, params in self._statements:
                    cursor.execute(sql, params)
                    if cursor.description is not None:
                        cursor.fetchall()
            return
        # SQLite (the smoke run): the same statements through the backend's thin cursor, which turns %s into ?.
        with connection.cursor() as cursor:
            for sql, params in self._statements:
                cursor.execute(sql, params)
                if cursor.description is not None:
                    cursor.fetchall()


def _raw_replay(request: Callable[[], None]) -> _Replay:
    """Run ``request`` once and record the SQL it sent (with its parameters)."""
    from django.db import connection

    statements: list[tuple[str, tuple]] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        request()
    if not statements:
        raise RuntimeError("the history request ran no SQL statement")
    return _Replay(statements)
