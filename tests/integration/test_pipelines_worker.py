"""Both real pipelines end to end with a real Celery worker on the embedded filesystem broker."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageOps

from memory_app.models import Character, HistoryRecord, WorkflowState
from tests.integration.test_workflow_worker import FAST, actions, status_of, wait_for
from tests.workflows.real_pipelines.conftest import STORY
from workflows import engine

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_env(start_worker, media, settings) -> dict[str, str]:
    return {**FAST, "COMICMEM_TEST_MEDIA_ROOT": str(media), "CACHE_DIR": str(settings.CACHE_DIR)}


def panels_on(path) -> int:
    """Panels drawn on a page: two columns of 512-pixel cells with 20-pixel margins; an empty cell is white."""
    with Image.open(io.BytesIO(path.read_bytes())) as page:
        page = page.convert("L")
        rows = (page.height - 20 - 40) // (512 + 20)
        assert page.width == 2 * 512 + 3 * 20
        cells = [(20 + column * 532, 20 + row * 532) for row in range(rows) for column in range(2)]
        return sum(1 for x, y in cells if ImageOps.invert(page.crop((x, y, x + 512, y + 512))).getbbox() is not None)


def start(user, workflow_type: str, data: dict, preferences: dict) -> WorkflowState:
    return engine.workflow_start(
        user=user, workflow_type=workflow_type, project_id="proj-001", data=data, preferences=preferences
    )


def test_text_compression_on_a_worker(start_worker, worker_env, user, project, manga_shonen):
    start_worker(**worker_env)
    run = start(user, "text_compression", {"text": STORY}, {"target_ratio": 0.6})
    wait_for(lambda: status_of(run) in {"completed", "failed"}, what="the run to end")

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.data["quality"]["passed"] is True
    assert [entry["step"] for entry in run.compression_history] == ["plot_summarization", "compression_execution"]
    assert run.progress["percent"] == 100.0
    assert run.snapshots.filter(event="step_completed").count() == 5


def test_comic_generation_on_a_worker_then_a_second_run_renders_nothing(
    start_worker, worker_env, media, user, project, manga_shonen
):
    start_worker(**worker_env)
    preferences = {"segment_length": 60, "panels_per_page": 2}
    first = start(user, "comic_generation", {"text": STORY, "style": "manga_shonen"}, preferences)
    wait_for(lambda: status_of(first) in {"completed", "failed"}, what="the first run to end")
    first.refresh_from_db()
    assert first.status == "completed", first.error
    assert first.progress == {"current": 6, "total": 6, "percent": 100.0, "description": "Completed."}
    segments = len(first.data["segments"])
    assert segments == 3
    pages = first.data["outputs"]["pages"]
    assert len(pages) == 2
    assert [panels_on(media / name) for name in pages] == [2, 1]
    assert [item["cached"] for item in first.data["rendered"]] == [False] * segments
    assert sorted(Character.objects.filter(project=project).values_list("name", flat=True)) == ["小明", "老王"]
    history = actions(first)
    assert history.count("text_segmentation_completed") == 1
    assert history.count("image_generation_completed") == segments
    assert history[-1] == "workflow_completed"
    record = HistoryRecord.objects.filter(workflow_id=first.pk, action="image_generation_completed").order_by("id")[0]
    assert record.details["image_url"].startswith(f"/api/workflows/{first.pk}/outputs/panel_")
    assert first.snapshots.filter(event="step_completed").count() == 6

    second = start(user, "comic_generation", {"text": STORY, "style": "manga_shonen"}, preferences)
    wait_for(lambda: status_of(second) in {"completed", "failed"}, what="the second run to end")
    second.refresh_from_db()
    assert second.status == "completed", second.error
    assert [item["cached"] for item in second.data["rendered"]] == [True] * segments
