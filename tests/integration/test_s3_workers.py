"""Several hosts sharing one S3-compatible store (moto's server on loopback): real Celery workers, each with its
own local CACHE_DIR and MEDIA_ROOT, and this process as the web host with yet another pair."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from memory_app.models import WorkflowState, WorkflowUnit
from tests.integration.test_workflow_worker import FAST, status_of, wait_for
from tests.workflows.real_pipelines.conftest import STORY
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREFERENCES = {"segment_length": 60, "panels_per_page": 2}


@pytest.fixture
def start_host(start_worker, s3_storage, media, tmp_path):
    """``start_host("a")``: a worker with its own local folders (``tmp/a/cache``, ``tmp/a/media``) on the store."""

    def start(name: str, **env: str):
        local = tmp_path / name
        return start_worker(
            **FAST,
            **s3_storage.environment(),
            CACHE_DIR=str(local / "cache"),
            COMICMEM_TEST_MEDIA_ROOT=str(local / "media"),
            **env,
        )

    return start


def local_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


def comic(user) -> WorkflowState:
    return engine.workflow_start(
        user=user,
        workflow_type="comic_generation",
        project_id="proj-001",
        data={"text": STORY, "style": "manga_shonen"},
        preferences=PREFERENCES,
    )


def finished(run: WorkflowState) -> WorkflowState:
    wait_for(lambda: status_of(run) in {"completed", "failed"}, timeout=120, what="the run to end")
    run.refresh_from_db()
    assert run.status == "completed", run.error
    return run


def test_a_panel_cached_by_one_host_is_a_hit_on_another_and_the_web_serves_it(
    start_host, s3_storage, user, project, manga_shonen, auth_client, client, settings, tmp_path
):
    first_host = start_host("a")
    first = finished(comic(user))
    first_host.stop()
    segments = len(first.data["segments"])
    assert [item["cached"] for item in first.data["rendered"]] == [False] * segments
    # Everything the first host wrote is in the store; nothing stayed in its local folders.
    assert local_files(tmp_path / "a" / "media") == []
    assert local_files(tmp_path / "a" / "cache") == []
    panels = [key for key in s3_storage.keys("media/") if "/panel_" in key]
    assert len(panels) == segments
    assert len(s3_storage.keys("cache/ai_images/")) >= segments

    start_host("b")
    second = finished(comic(user))
    assert [item["cached"] for item in second.data["rendered"]] == [True] * segments

    # The web host (this process, other local folders) serves a panel the first host wrote: the run's
    # authenticated route, the presigned URLs of the run's answer, and a web-served signed URL of its history.
    name = f"projects/{project.pk}/images/{first.pk}/panel_001.png"
    stored = default_storage.open(name).read()
    assert stored.startswith(b"\x89PNG")
    route = auth_client.get(f"/api/workflows/{first.pk}/outputs/panel_001.png")
    assert b"".join(route.streaming_content) == stored
    output_urls = auth_client.get(f"/api/workflows/{first.pk}/").json()["data"]["output_urls"]
    assert output_urls["panel_001.png"].startswith(f"{s3_storage.endpoint_url}/comicmem-test/media/projects/")
    with urllib.request.urlopen(output_urls["panel_001.png"], timeout=5) as answer:
        assert answer.read() == stored

    settings.MEMORY = settings.MEMORY.model_copy(
        update={"storage": settings.MEMORY.storage.model_copy(update={"signed_urls": "web"})}
    )
    history = auth_client.get(
        "/api/memory/history/proj-001", {"action_type": "image_generation_completed", "order": "asc"}
    )
    signed = [record["details"]["image_url"] for record in history.json()["data"]["records"]]
    assert len(signed) == 2 * segments  # both runs'
    assert all(url.startswith("http://testserver/api/files/") for url in signed)
    served = client.get(signed[0].removeprefix("http://testserver"))  # no credentials at all
    assert (served.status_code, served["Content-Type"]) == (200, "image/png")
    assert b"".join(served.streaming_content).startswith(b"\x89PNG")
    tampered = signed[0][:-3] + ("AAA" if not signed[0].endswith("AAA") else "BBB")
    assert client.get(tampered.removeprefix("http://testserver")).status_code == 403


def test_the_store_unreachable_mid_run_the_step_is_retried_and_the_run_completes(
    start_host, s3_storage, user, project, manga_shonen
):
    start_host("a", WORKFLOW_MAX_RETRIES="8")
    s3_storage.outage()
    try:
        run = comic(user)
        wait_for(
            lambda: WorkflowUnit.objects.filter(workflow=run, error__retryable=True).exists(),
            timeout=90,
            what="a step to fail on the store and be given back for a retry",
        )
        failed = WorkflowUnit.objects.filter(workflow=run, error__retryable=True).first()
        assert failed is not None
        assert failed.error["type"] == "EndpointConnectionError", failed.error
        assert status_of(run) not in {"completed", "failed"}
    finally:
        s3_storage.restore()

    run = finished(run)
    failed.refresh_from_db()
    assert failed.status == "done"
    assert failed.attempts >= 2
    assert len([key for key in s3_storage.keys("media/") if "/panel_" in key]) == len(run.data["segments"])
    assert all(default_storage.exists(name) for name in run.data["outputs"]["pages"])
