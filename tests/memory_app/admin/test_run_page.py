"""The run page of the admin: panels with seed, prompt and cache hit; the step timeline; the snapshot tree and its
actions; the failure in words; files served to staff only, with a placeholder for a missing or damaged one; a run
of a thousand units and snapshots in a bounded number of queries."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from memory_app.models import HistoryRecord, WorkflowSnapshot, WorkflowState, WorkflowUnit
from tests.workflows.real_pipelines.conftest import STORY
from workflows import engine

pytestmark = pytest.mark.django_db

PREFERENCES = {"segment_length": 60, "panels_per_page": 2}


@pytest.fixture
def comic(run_inline, user, project, media, manga_shonen) -> WorkflowState:
    run = run_inline(
        engine.workflow_start,
        user=user,
        workflow_type="comic_generation",
        project_id="proj-001",
        data={"text": STORY, "style": "manga_shonen"},
        preferences=PREFERENCES,
    )
    run.refresh_from_db()
    assert run.status == "completed", run.error
    return run


def page_of(admin_client, run: WorkflowState, query: str = "") -> str:
    response = admin_client.get(f"/admin/memory_app/workflowstate/{run.pk}/change/{query}")
    assert response.status_code == 200
    return response.content.decode()


def test_the_run_page_shows_panels_pages_timeline_and_tree(admin_client, comic):
    page = page_of(admin_client, comic)

    panels = re.findall(r'<figure class="thumb" data-kind="panel" data-number="(\d+)" data-cached="(hit|miss)"', page)
    assert panels == [("1", "miss"), ("2", "miss"), ("3", "miss")]
    assert len(re.findall(r'<figure class="thumb" data-kind="page"', page)) == 2
    for panel in comic.data["panels"]:
        assert f"seed {panel['seed']}" in page
    assert f"/admin/memory_app/workflowstate/{comic.pk}/file/panel_001.png" in page
    # One bar per step: six steps, each dispatched once; image_generation fanned out to three units.
    assert re.findall(r'data-step="([a-z_]+)" data-units="(\d+)"', page) == [
        ("text_segmentation", "1"),
        ("script_generation", "1"),
        ("character_design", "1"),
        ("scene_composition", "1"),
        ("image_generation", "3"),
        ("quality_control", "1"),
    ]
    assert len(re.findall(r'data-unit="\d+"', page)) == 3
    snapshots = WorkflowSnapshot.objects.filter(workflow=comic).count()
    assert page.count('class="snapshot-row"') == snapshots
    assert page.count('data-head="true"') == 1
    assert '<details class="json-block" data-field="data">' in page
    assert "restore-rerun" in page and "redraw-button" in page
    assert "run-failure" not in page
    # Read-only fields: the run changes through the page's actions, never through a Save button.
    assert 'name="_save"' not in page and 'name="_continue"' not in page and 'name="_addanother"' not in page


def test_a_second_page_of_panels_when_there_are_many(admin_client, comic, monkeypatch):
    monkeypatch.setattr("memory_app.admin.workflow_page.PANELS_PER_PAGE", 2)

    first, second = page_of(admin_client, comic), page_of(admin_client, comic, "?panels=2")

    assert re.findall(r'data-kind="panel" data-number="(\d+)"', first) == ["1", "2"]
    assert re.findall(r'data-kind="panel" data-number="(\d+)"', second) == ["3"]
    junk = page_of(admin_client, comic, "?panels=junk")
    assert re.findall(r'data-kind="panel" data-number="(\d+)"', junk) == ["1", "2"]


def test_a_panel_file_is_served_to_staff_and_a_placeholder_says_when_it_is_missing_or_damaged(
    admin_client, client, comic, user
):
    base = f"/admin/memory_app/workflowstate/{comic.pk}/file"
    whole = admin_client.get(f"{base}/panel_001.png")
    default_storage.delete(comic.data["rendered"][1]["name"])
    with default_storage.open(comic.data["rendered"][2]["name"], "wb") as handle:
        handle.write(b"\x89PNG not really")

    missing, damaged = admin_client.get(f"{base}/panel_002.png"), admin_client.get(f"{base}/panel_003.png")
    unknown = admin_client.get(f"{base}/memory_config.yaml")  # not one of the run's files
    client.force_login(user)  # not staff
    refused = client.get(f"{base}/panel_001.png")

    assert whole.status_code == 200 and whole["Content-Type"] == "image/png"
    assert whole.content.startswith(b"\x89PNG")
    assert (missing.status_code, missing["Content-Type"], missing["X-Image-Problem"]) == (
        404,
        "image/svg+xml",
        "missing",
    )
    assert b"File missing" in missing.content and b"panel_002.png" in missing.content
    assert (damaged.status_code, damaged["X-Image-Problem"]) == (422, "damaged")
    assert b"File damaged" in damaged.content
    assert (unknown.status_code, unknown["X-Image-Problem"]) == (404, "missing")
    assert refused.status_code == 302 and "/admin/login/" in refused["Location"]
    # The page itself still renders with the files gone.
    assert page_of(admin_client, comic).count('data-kind="panel"') == 3


def test_restore_from_the_tree_forks_and_marks_the_new_head(admin_client, comic, django_capture_on_commit_callbacks):
    first_step = WorkflowSnapshot.objects.get(workflow=comic, sequence=2)

    response = admin_client.post(
        f"/admin/memory_app/workflowstate/{comic.pk}/act/", {"operation": "restore", "snapshot": first_step.sequence}
    )

    assert response.status_code == 302
    comic.refresh_from_db()
    assert comic.status == "pending"
    assert comic.head.parent_id == first_step.pk
    page = page_of(admin_client, comic)
    assert re.search(rf'data-sequence="{first_step.sequence}" data-parent="\d+" data-children="2"', page)
    assert "fork \u00d72" in page
    head = re.search(r'data-sequence="(\d+)" data-parent="(\d+)" data-children="0" data-head="true"', page)
    assert head is not None and int(head.group(2)) == first_step.pk
    assert "Restored to snapshot #2." in page
    assert "restore-rerun" in page  # a pending run may be restored again


def test_bad_actions_are_refused_with_a_message_and_change_nothing(admin_client, comic):
    before = (WorkflowSnapshot.objects.count(), WorkflowState.objects.count(), HistoryRecord.objects.count())
    url = f"/admin/memory_app/workflowstate/{comic.pk}/act/"

    answers = [
        admin_client.post(url, {"operation": "explode"}, follow=True),
        admin_client.post(url, {"operation": "restore", "snapshot": 999}, follow=True),
        admin_client.post(url, {"operation": "continue"}, follow=True),
        admin_client.post(url, {"operation": "redraw"}, follow=True),
        admin_client.post(url, {"operation": "redraw", "panel": 40}, follow=True),
    ]
    refused_get = admin_client.get(url)

    texts = [answer.content.decode() for answer in answers]
    assert all(answer.status_code == 200 for answer in answers)
    assert "Not a valid action" in texts[0]
    assert "has no snapshot #999" in texts[1]
    assert 'class="error"' in texts[2]
    assert "Say which panel to redraw." in texts[3]
    assert 'class="error"' in texts[4]
    assert refused_get.status_code == 405
    assert (WorkflowSnapshot.objects.count(), WorkflowState.objects.count(), HistoryRecord.objects.count()) == before


def test_redraw_from_the_page_makes_a_new_run(admin_client, comic, run_inline, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/memory_app/workflowstate/{comic.pk}/act/", {"operation": "redraw", "panel": 2}
        )

    fork = WorkflowState.objects.get(forked_from=comic)
    assert fork.redraw_panel == 2
    assert response["Location"] == f"/admin/memory_app/workflowstate/{fork.pk}/change/"


def test_a_failed_run_says_where_and_why(admin_client, user, project):
    run = WorkflowState.objects.create(
        workflow_type="comic_generation",
        project=project,
        owner=user,
        steps=["text_segmentation", "image_generation", "quality_control"],
        current_step="image_generation",
        step_index=1,
        status="failed",
        error={
            "step": "image_generation",
            "step_index": 1,
            "type": "ProviderError",
            "message": "The image API answered 503.",
        },
    )
    now = timezone.now()
    for index in range(4):
        WorkflowUnit.objects.create(
            workflow=run,
            step_key=run.step_key,
            step_index=1,
            step="image_generation",
            unit_index=index,
            status="failed" if index == 2 else "done",
            attempts=3 if index == 2 else 1,
            lease_expires_at=now,
        )

    page = page_of(admin_client, run)

    assert "Step 2 of 3 (image_generation) failed on unit 3 of 4, after 3 attempts." in page
    assert "ProviderError: The image API answered 503." in page
    assert "resume-button" in page
    assert "No panels composed yet." in page


def test_a_run_of_a_thousand_units_and_snapshots_is_paged_in_a_bounded_number_of_queries(admin_client, user, project):
    run = WorkflowState.objects.create(
        workflow_type="comic_generation",
        project=project,
        owner=user,
        steps=["a", "image_generation"],
        status="completed",
    )
    start = timezone.now() - dt.timedelta(hours=1)
    key = uuid.uuid4()
    WorkflowUnit.objects.bulk_create(
        WorkflowUnit(
            workflow=run,
            step_key=key,
            step_index=1,
            step="image_generation",
            unit_index=index,
            status="done",
            attempts=1,
            lease_expires_at=start,
        )
        for index in range(1000)
    )
    # Spread the units in time: unit 500 is the slow one.
    for index in (0, 500):
        WorkflowUnit.objects.filter(workflow=run, unit_index=index).update(
            created_at=start, updated_at=start + dt.timedelta(seconds=600 if index == 500 else 2)
        )
    WorkflowUnit.objects.filter(workflow=run).exclude(unit_index__in=(0, 500)).update(
        created_at=start, updated_at=start + dt.timedelta(seconds=2)
    )
    base = 10_000_000  # explicit keys, so each snapshot can name its parent in one bulk insert
    WorkflowSnapshot.objects.bulk_create(
        WorkflowSnapshot(
            pk=base + number,
            workflow=run,
            sequence=number,
            parent_id=base + number - 1 if number > 1 else None,
            event="step_completed",
            step_index=1,
            status="in_progress",
        )
        for number in range(1, 1001)
    )
    WorkflowState.objects.filter(pk=run.pk).update(head_id=base + 1000)

    with CaptureQueriesContext(connection) as queries:
        page = page_of(admin_client, run)
        later = page_of(admin_client, run, "?units=3&snapshots=1")

    # About a dozen per page load, whatever the number of units and snapshots: none per row.
    assert len(queries) <= 30, [query["sql"] for query in queries]
    assert page.count('data-unit="') == 200
    assert "Units page 1 of 5" in page
    assert page.count('class="snapshot-row"') == 50
    assert 'data-sequence="1000"' in page and 'data-sequence="951"' in page
    assert page.count('data-head="true"') == 1
    assert "1 branch on this page" in page
    assert 'data-slow="true"' not in page  # unit 500 is on the third page
    assert later.count('data-slow="true"') == 1
    assert 'data-sequence="1"' in later and 'data-head="true"' not in later
