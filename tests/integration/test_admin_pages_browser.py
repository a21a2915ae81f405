"""Staff look at the admin's visual pages in headless Chromium: a comic run (thumbnails that load, a placeholder
for a missing panel, one timeline bar per step, a branch tree with a fork and its head), a character (reference
image, the panels it appears in, versions), a style (its satisfaction chart) and the dashboard. Screenshots are
kept beside the test's files and checked for content: what they show, not exact pixels."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from memory_app.models import Character, MetricSnapshot, StyleUsage, WorkflowSnapshot, WorkflowState
from memory_app.services.character_references import character_reference_add
from memory_app.services.workflow import workflow_operations
from tests.factories import UserFactory
from tests.support.browser import staff_login
from tests.workflows.real_pipelines.conftest import STORY
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCREENSHOTS = Path(os.environ.get("COMICMEM_SCREENSHOT_DIR", "")) if os.environ.get("COMICMEM_SCREENSHOT_DIR") else None


def reference_png() -> bytes:
    image = Image.new("RGB", (96, 128), "#f4d9b0")
    for x in range(20, 76):
        for y in range(10, 50):
            image.putpixel((x, y), (40, 30, 20))
    output = io.BytesIO()
    image.save(output, format="PNG")
    return output.getvalue()


def distinct_colors(png: bytes) -> int:
    with Image.open(io.BytesIO(png)) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def red_share(png: bytes) -> float:
    with Image.open(io.BytesIO(png)) as image:
        picture = image.convert("RGB")
        colors = picture.getcolors(maxcolors=1 << 20) or []
        total = picture.width * picture.height
    return sum(count for count, (r, g, b) in colors if r > 150 and g < 80 and b < 80) / total


@pytest.fixture
def looked_at(transactional_db, settings, tmp_path, manga_shonen, eager):
    """A finished comic run restored twice (a fork off the step before the end, then back to the end), one panel
    file deleted; its character with a reference image; the style rated; a day of metric snapshots. All made
    before the browser starts: ORM calls made while Playwright's loop runs would use another connection."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.CACHE_DIR = tmp_path / "cache"
    settings.CACHE_DIR.mkdir()
    owner = UserFactory(username="alice")
    UserFactory(username="staffer", is_staff=True, is_superuser=True)
    from tests.factories import ProjectFactory

    ProjectFactory(id="proj-001", owner=owner, name="Village")
    run = engine.workflow_start(
        user=owner,
        workflow_type="comic_generation",
        project_id="proj-001",
        data={"text": STORY, "style": "manga_shonen"},
        preferences={"segment_length": 60, "panels_per_page": 2},
    )
    run.refresh_from_db()
    assert run.status == "completed", run.error
    snapshots = list(WorkflowSnapshot.objects.filter(workflow=run).order_by("sequence"))
    operations = workflow_operations()
    operations.restore(workflow=run, index=len(snapshots) - 2, rerun=False, user=owner)
    run.refresh_from_db()
    operations.restore(workflow=run, index=len(snapshots) - 1, rerun=False, user=owner)
    run.refresh_from_db()
    default_storage.delete(run.data["rendered"][2]["name"])

    character = Character.objects.get(project_id="proj-001", name="小明")
    character_reference_add(user=owner, character=character, data=reference_png())
    start = timezone.now() - dt.timedelta(days=2)
    for day, score in enumerate([2.5, 4.0, 4.5]):
        StyleUsage.objects.create(
            style=manga_shonen,
            project=run.project,
            user=owner,
            satisfaction_score=score,
            rated_at=start + dt.timedelta(hours=8 * day),
        )
    for hour in range(6):
        MetricSnapshot.objects.create(
            taken_at=timezone.now() - dt.timedelta(hours=6 - hour),
            memory_total=100,
            memory_used=50,
            memory_percentage=50.0,
            active_contexts=1,
            cache={
                "images": {
                    "hits": 3 * hour,
                    "misses": 2 * hour + 1,
                    "current_size": hour,
                    "memory_usage_bytes": 2048 * hour,
                }
            },
            workflow_states={"completed": hour, "failed": hour // 2},
        )
    return {"run": run, "character": character, "snapshots": WorkflowSnapshot.objects.filter(workflow=run).count()}


def shoot(page, element, name: str, tmp_path: Path) -> bytes:
    png = (element or page).screenshot(**({} if element else {"full_page": True}))
    for folder in filter(None, (tmp_path, SCREENSHOTS)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(png)
    return png


def natural_width(page, selector: str) -> int:
    return page.eval_on_selector(selector, "image => image.complete ? image.naturalWidth : -1")


def test_staff_look_at_a_run_a_character_a_style_and_the_dashboard(live_server, looked_at, browser_page, tmp_path):
    page = browser_page
    run: WorkflowState = looked_at["run"]
    run_path = f"/admin/memory_app/workflowstate/{run.pk}/change/"
    staff_login(page, live_server.url, run_path)
    page.wait_for_load_state("networkidle")

    # Thumbnails load: two drawn panels at the panel size, the deleted one as the placeholder saying so.
    panels = page.locator('#run-panels figure[data-kind="panel"]')
    assert panels.count() == 3
    assert [natural_width(page, f'figure[data-kind="panel"][data-number="{n}"] img') for n in (1, 2)] == [512, 512]
    assert natural_width(page, 'figure[data-kind="panel"][data-number="3"] img') == 320
    assert page.locator('#run-pages figure[data-kind="page"] img').count() == 2
    assert all(natural_width(page, f'#run-pages figure[data-number="{n}"] img') > 0 for n in (1, 2))
    assert page.locator('figure[data-number="1"] .cache-badge').inner_text() == "cache miss"
    # The timeline: one bar per step, image_generation with its three units below.
    step_bars = page.locator("#step-chart rect")
    assert [step_bars.nth(n).get_attribute("data-step") for n in range(step_bars.count())] == [
        "text_segmentation",
        "script_generation",
        "character_design",
        "scene_composition",
        "image_generation",
        "quality_control",
    ]
    assert page.locator("#unit-chart rect").count() == 3
    # The tree: the snapshot before the end has two children (the end, and the first restore); the head is last.
    rows = page.locator("#snapshot-tree tr.snapshot-row")
    assert rows.count() == looked_at["snapshots"]
    forks = page.locator('#snapshot-tree tr[data-children="2"]')
    assert forks.count() == 1
    assert page.locator('#snapshot-tree tr[data-head="true"]').get_attribute("data-sequence") == str(rows.count())
    assert "2 branches" in page.locator("#run-snapshots h2").inner_text()
    assert page.locator("#snapshot-tree circle.head").count() == 1
    # The data is collapsed until opened.
    data_block = page.locator('details[data-field="data"]')
    assert not data_block.locator("pre").is_visible()
    data_block.locator("summary").click()
    assert '"panels": [' in data_block.locator("pre").inner_text()

    whole = shoot(page, None, "run-page", tmp_path)
    drawn = shoot(page, page.locator('figure[data-kind="panel"][data-number="1"] img'), "panel-1", tmp_path)
    missing = shoot(page, page.locator('figure[data-kind="panel"][data-number="3"] img'), "panel-3-missing", tmp_path)
    tree = shoot(page, page.locator("#snapshot-tree"), "snapshot-tree", tmp_path)
    assert distinct_colors(drawn) > 50  # a drawn picture, not a blank box
    assert red_share(missing) > 0.005  # the placeholder's red frame and words
    assert distinct_colors(tree) > 3 and len(whole) > 50_000

    # The character page: its reference image, the panels it appears in, its versions.
    character = looked_at["character"]
    page.goto(f"{live_server.url}/admin/memory_app/character/{character.pk}/change/")
    page.wait_for_load_state("networkidle")
    assert natural_width(page, "#character-references figure img") == 96
    appearances = page.locator("#character-appearances figure img")
    assert appearances.count() >= 1
    assert all(
        page.evaluate("image => image.naturalWidth", appearances.nth(n).element_handle()) > 0
        for n in range(appearances.count())
    )
    assert page.locator(".character-version").count() >= 1
    shoot(page, None, "character-page", tmp_path)

    # The style page: three rated uses on the chart.
    page.goto(f"{live_server.url}/admin/memory_app/styletemplate/manga_shonen/change/")
    page.wait_for_load_state("networkidle")
    assert page.locator("#scores-chart circle").count() == 3
    assert page.locator("#style-examples figure img").count() >= 1
    chart = shoot(page, page.locator("#scores-chart"), "style-scores", tmp_path)
    assert distinct_colors(chart) > 3

    # The dashboard, from the index's link.
    page.goto(f"{live_server.url}/admin/")
    page.click("#dashboard-link a")
    page.wait_for_url("**/admin/memory_app/metricsnapshot/dashboard/")
    assert page.locator('#hit-rate-chart g[data-series="images"] circle').count() == 5
    assert page.locator('#entries-chart g[data-series="images"] circle').count() == 6
    assert page.locator("#runs-chart g.series").count() == 2
    dashboard = shoot(page, None, "dashboard", tmp_path)
    assert distinct_colors(dashboard) > 10
