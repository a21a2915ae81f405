"""A comic run's live events: one ``panel.ready`` per panel, whose URL loads the panel without credentials."""

from __future__ import annotations

import json

import pytest
from django.core.files.storage import default_storage
from django.test import Client

from memory_app.models import Event
from workflows import engine

pytestmark = pytest.mark.django_db


def test_each_panel_is_an_event_whose_url_loads_the_image(run_inline, user, project, story, media, auth_client):
    run = run_inline(
        engine.workflow_start,
        user=user,
        workflow_type="comic_generation",
        project_id="proj-001",
        data={"text": story},
        preferences={"segment_length": 80},
    )
    run.refresh_from_db()
    assert run.status == "completed", run.error
    panels = len(run.data["panels"])

    response = auth_client.get(f"/api/workflows/{run.pk}/events")
    blocks = [block for block in b"".join(response.streaming_content).decode().split("\n\n") if "data: " in block]
    ready = [json.loads(block.split("data: ", 1)[1]) for block in blocks if "event: panel.ready" in block]

    assert sorted(event["panel"]["index"] for event in ready) == list(range(panels))
    assert Event.objects.filter(workflow=run, kind="panel.ready").count() == panels
    assert all("blob" not in event["panel"] for event in ready)  # the storage name stays inside
    first = min(ready, key=lambda event: event["panel"]["index"])
    assert first["panel"]["name"] == "panel_001.png"
    image = Client().get(first["panel"]["url"])  # no credentials: the signed URL is the credential
    assert image.status_code == 200
    body = b"".join(image.streaming_content) if image.streaming else image.content
    with default_storage.open(run.data["outputs"]["panels"][0]) as handle:
        assert body == handle.read()
        assert body.startswith(b"\x89PNG")
