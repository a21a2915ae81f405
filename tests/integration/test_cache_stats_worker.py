"""A worker writes its batched cache counts at the end of every task: a run's image hits are in
/api/memory/cache/stats the moment the run ends, not a flush interval later."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_pipelines_worker import start
from tests.integration.test_workflow_worker import FAST, status_of, wait_for
from tests.workflows.real_pipelines.conftest import STORY

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def config_with_a_long_flush_interval(tmp_path: Path) -> Path:
    """The shipped configuration with the periodic flush an hour away: only the end-of-task flush can write."""
    text = (REPO_ROOT / "memory_config.yaml").read_text(encoding="utf-8")
    assert "    stats_flush_interval: 5 " in text
    path = tmp_path / "memory_config.yaml"
    path.write_text(text.replace("    stats_flush_interval: 5 ", "    stats_flush_interval: 3600 "), encoding="utf-8")
    return path


def image_counts(client) -> tuple[int, int]:
    figures = client.get("/api/memory/cache/stats").json()["data"]["caches"]["images"]
    return figures["hits"], figures["misses"]


def test_a_second_identical_run_shows_its_image_hits_as_soon_as_it_ends(
    start_worker, media, settings, tmp_path, user, project, manga_shonen, staff_client
):
    start_worker(
        **FAST,
        concurrency=2,
        COMICMEM_TEST_MEDIA_ROOT=str(media),
        CACHE_DIR=str(settings.CACHE_DIR),
        MEMORY_CONFIG_FILE=str(config_with_a_long_flush_interval(tmp_path)),
    )
    data, preferences = {"text": STORY, "style": "manga_shonen"}, {"segment_length": 60, "panels_per_page": 2}
    before = image_counts(staff_client)

    first = start(user, "comic_generation", data, preferences)
    wait_for(lambda: status_of(first) in {"completed", "failed"}, what="the first run to end")
    first.refresh_from_db()
    assert first.status == "completed", first.error
    panels = len(first.data["rendered"])
    after_first = image_counts(staff_client)
    assert after_first == (before[0], before[1] + panels)

    second = start(user, "comic_generation", data, preferences)
    wait_for(lambda: status_of(second) in {"completed", "failed"}, what="the second run to end")
    # Read at once: no waiting for a periodic flush.
    after_second = image_counts(staff_client)

    second.refresh_from_db()
    assert second.status == "completed", second.error
    assert [item["cached"] for item in second.data["rendered"]] == [True] * panels
    assert after_second == (after_first[0] + panels, after_first[1])
