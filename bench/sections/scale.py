"""Scale (opt-in: ``python -m bench --only scale``; it fills ten million history records and takes longer than
the default run): a 200-panel comic on 8 worker processes in two worker services against its ideal, and history
append and first page at 1M, 3M and 10M records of one project.

The comic runs the real ``comic_generation`` pipeline, as target 5 does, with two Celery worker services of
concurrency 4 (two ``celery worker`` commands, as two machines would run them) consuming the same Redis queue;
the image provider sleeps 200 ms per panel, so the ideal image step is panels x 0.2 / 8 s.

History is filled by the database (``INSERT … SELECT generate_series``) to each size in turn; at each, the
median append against the append at 0 records of a fresh project (the O(1) claim), and the first page through
the API against its own SQL statements run raw on the same connection (as target 3 does on 1M records).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.core import BENCH_DIR, Result, Sizes, median, result, timed_pair
from bench.image_server import SleepingImageServer
from bench.sections.history import _fill, _raw_replay
from bench.sections.workflows import FANOUT_STEP, Worker, _comic_fan_out, _seconds, _step_seconds, _wait_round_trip

SERVICES = 2


def _config_allowing(panels: int) -> Path:
    """The project's memory configuration with room for ``panels`` panels in one run (``max_segments`` is 60)."""
    from django.conf import settings

    document = yaml.safe_load(Path(settings.MEMORY_CONFIG_FILE).read_text(encoding="utf-8"))
    pipelines = document["memory"].setdefault("pipelines", {})
    pipelines["max_segments"] = max(panels, pipelines.get("max_segments", 0))
    path = BENCH_DIR / "scale-memory_config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def _comic(*, sizes: Sizes, log: Callable[[str], None]) -> Result:
    from django.contrib.auth import get_user_model

    from memory_app.models import Project, WorkflowState

    user, _ = get_user_model().objects.get_or_create(username="bench-scale")
    WorkflowState.objects.filter(project_id="bench-scale").delete()
    Project.objects.get_or_create(
        id="bench-scale", defaults={"public_id": "bench-scale", "owner": user, "name": "Scale benchmark"}
    )
    panels, concurrency = sizes.scale_panels, sizes.fanout_concurrency
    processes = SERVICES * concurrency
    with SleepingImageServer(seconds=sizes.fanout_image_seconds) as images:
        provider = {
            "IMAGE_PROVIDER": "openai",
            "IMAGE_BASE_URL": images.base_url,
            "IMAGE_MODEL": "bench-sleep",
            "MEMORY_CONFIG_FILE": str(_config_allowing(panels)),
        }
        workers = [
            Worker(
                concurrency=concurrency,
                log_path=BENCH_DIR / f"worker-scale-{index}.log",
                env=provider,
                name=f"bench-scale{index}",
            )
            for index in range(SERVICES)
        ]
        try:
            _wait_round_trip()
            log(f"scale: warming {processes} worker processes")
            _comic_fan_out(user=user, project_id="bench-scale", segments=processes * 2, images=images)
            log(f"scale: a {panels}-panel comic on {SERVICES} worker services x {concurrency}")
            comic = _comic_fan_out(user=user, project_id="bench-scale", segments=panels, images=images)
        finally:
            for worker in workers:
                worker.stop()
    steps = _step_seconds(comic)
    ideal = panels * sizes.fanout_image_seconds / processes
    return result(
        target="S",
        name=(
            f"comic_generation fan-out of {panels} x {sizes.fanout_image_seconds * 1000:g} ms images, "
            f"{SERVICES} worker services x concurrency {concurrency}"
        ),
        measured=steps[FANOUT_STEP] * 1000,
        baseline=ideal * 1000,
        unit="ms",
        baseline_name=f"ideal panels x sleep / {processes} processes",
        limit=1.15,
        comparison="<=",
        wall_ms=round(_seconds(comic) * 1000, 1),
        step_ms={name: round(seconds * 1000, 1) for name, seconds in steps.items()},
    )


def _history(*, sizes: Sizes, log: Callable[[str], None]) -> list[Result]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from memory_app.models import HistoryRecord, Project
    from memory_app.services.history import history_record

    user, _ = get_user_model().objects.get_or_create(username="bench-scale")
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    details = {"step": "image_generation", "segment": 3, "duration_ms": 812}
    projects = {}
    for name in ("bench-scale-empty", "bench-scale-history"):
        # One DELETE by the database: the ORM's delete would load a previous run's ten million rows first.
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {HistoryRecord._meta.db_table} WHERE project_id = %s", [name])  # noqa: S608
        Project.objects.filter(pk=name).delete()
        projects[name] = Project.objects.create(id=name, public_id=name, owner=user, name="Scale benchmark")

    def appender(project: Project) -> Callable[[], object]:
        return lambda: history_record(project=project, action="workflow_step_completed", details=details, user=user)

    project, empty = projects["bench-scale-history"], projects["bench-scale-empty"]
    url = f"/api/memory/history/{project.pk}?limit=50"

    def get() -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.content[:300]!r}")

    points: dict[int, dict[str, float]] = {}
    filled = 0
    for size in sizes.scale_history_sizes:
        log(f"scale: filling history to {size:,} records")
        started = time.monotonic()
        _fill(project.pk, filled, size)
        filled = size
        fill_seconds = time.monotonic() - started
        # Alternately on the filled project and on one that stays empty: a burst of other work on the machine
        # touches both series alike.
        appended, at_zero = (
            median(samples) for samples in timed_pair(appender(project), appender(empty), sizes.history_appends)
        )
        get()
        replay = _raw_replay(get)
        replay()
        api_samples, raw_samples = timed_pair(get, replay, sizes.api_repeats)
        points[size] = {
            "append_ms": round(appended * 1000, 3),
            "append_at_0_ms": round(at_zero * 1000, 3),
            "first_page_ms": round(median(api_samples) * 1000, 3),
            "first_page_raw_sql_ms": round(median(raw_samples) * 1000, 3),
            "fill_seconds": round(fill_seconds, 1),
        }
        log(f"scale: at {size:,}: {points[size]}")
    largest = sizes.scale_history_sizes[-1]
    at_largest = points[largest]
    return [
        result(
            target="S",
            name=f"history append at {largest:,} records vs at 0",
            measured=at_largest["append_ms"],
            baseline=at_largest["append_at_0_ms"],
            unit="ms",
            baseline_name="history append at 0 records, called alternately",
            limit=1.5,
            comparison="<=",
            points={f"{size:,}": figures for size, figures in points.items()},
        ),
        result(
            target="S",
            name=f"API first history page (50), {largest:,} records, p50",
            measured=at_largest["first_page_ms"],
            baseline=at_largest["first_page_raw_sql_ms"],
            unit="ms",
            baseline_name="its SQL statements raw on the same connection",
            limit=2.0,
            comparison="<=",
            points={f"{size:,}": figures for size, figures in points.items()},
        ),
    ]


def run(*, sizes: Sizes, log: Callable[[str], None]) -> list[Result]:
    return [_comic(sizes=sizes, log=log), *_history(sizes=sizes, log=log)]
