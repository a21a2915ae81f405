"""Live events: recorded in the engine's own transactions, streamed as Server-Sent Events in id order, resumable."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token

from memory_app.api.events import EVENTS_CHANNEL as STREAM_CHANNEL
from memory_app.models import Event, WorkflowState
from memory_app.services.events import EVENTS_CHANNEL, event_panel_ready, events_cleanup
from workflows import engine

pytestmark = pytest.mark.django_db(transaction=True)

FAN_OUT_KINDS = [
    "workflow.status",  # started
    "step.completed",  # split
    "workflow.progress",  # render 0 of 2 (its units created)
    "workflow.progress",  # render 1 of 2
    "step.completed",  # render (the last unit)
    "step.completed",  # bind
    "workflow.completed",
]


def start(run_inline, user, text: str = "a b", **extra: Any) -> WorkflowState:
    run: WorkflowState = run_inline(
        engine.workflow_start,
        user=user,
        workflow_type="fan_out",
        project_id="proj-001",
        data={"text": text, **extra},
    )
    return run


def kinds(run: WorkflowState) -> list[str]:
    return list(Event.objects.filter(workflow=run).order_by("id").values_list("kind", flat=True))


def parse(raw: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """The events (id, event, data) and the comments of a stream's bytes."""
    events, comments = [], []
    for block in raw.decode().split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif ": " in line:
                name, value = line.split(": ", 1)
                fields[name] = value
        if "id" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events, comments


def read_stream(user, path: str, *, headers: dict[str, str] | None = None, limit: float = 10) -> bytes:
    """GET ``path`` through Django's ASGI handler and read the stream until it ends (or ``limit`` seconds)."""
    token = Token.objects.get_or_create(user=user)[0].key

    async def go() -> tuple[int, bytes]:
        response = await AsyncClient().get(path, headers={"Authorization": f"Token {token}", **(headers or {})})
        if not response.streaming:
            return response.status_code, response.content
        chunks = []

        async def consume() -> None:
            async for chunk in response.streaming_content:
                chunks.append(chunk)

        # A stream that never ends by itself (a project's) is read for ``limit`` seconds.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consume(), timeout=limit)
        return response.status_code, b"".join(chunks)

    status, body = asyncio.run(go())
    assert status == 200, body
    return body


def test_a_run_records_one_event_per_change_in_order(run_inline, user, project):
    run = start(run_inline, user)

    assert kinds(run) == FAN_OUT_KINDS
    last = Event.objects.filter(workflow=run).order_by("id").last()
    assert last is not None
    assert last.data["status"] == "completed" and last.data["progress"]["percent"] == 100.0
    assert last.project_id == run.project_id


def test_a_panel_ready_event_states_the_run_without_reading_its_data(run_inline, user, project):
    run = start(run_inline, user)
    run.refresh_from_db()

    with CaptureQueriesContext(connection) as captured:
        event = event_panel_ready(workflow_id=run.pk, index=2, blob="projects/k/images/w/panel_003.png")

    assert event.kind == "panel.ready" and event.workflow_id == run.pk and event.project_id == run.project_id
    assert event.data == {
        "workflow_id": str(run.pk),
        "status": "completed",
        "current_step": run.current_step,
        "step_index": run.step_index,
        "panel": {"index": 2, "name": "panel_003.png", "blob": "projects/k/images/w/panel_003.png"},
    }
    (read,) = [query["sql"] for query in captured.captured_queries if query["sql"].startswith("SELECT")]
    assert '"memory_app_workflowstate"."data"' not in read


def test_a_failure_and_a_cancel_are_events(run_inline, user, project, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("x")
    run = start(run_inline, user, faults={"bind": {"fail_while_exists": str(flag)}})
    assert kinds(run)[-1] == "workflow.failed"
    assert Event.objects.filter(workflow=run).last().data["error"]["step"] == "bind"  # type: ignore[union-attr]

    other = start(run_inline, user, text="a", faults={"render": {"fail_while_exists": str(flag)}})
    run_inline(engine.workflow_cancel, user=user, workflow=other)
    assert kinds(other)[-2:] == ["workflow.failed", "workflow.cancelled"]


def test_the_stream_of_an_ended_run_sends_everything_then_ends(run_inline, user, project):
    run = start(run_inline, user)

    events, comments = parse(read_stream(user, f"/api/workflows/{run.pk}/events"))

    assert [event["event"] for event in events] == FAN_OUT_KINDS
    ids = [event["id"] for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[-1]["data"]["workflow_id"] == str(run.pk)
    assert comments == []


def test_last_event_id_resumes_with_exactly_the_rest(run_inline, user, project):
    run = start(run_inline, user)
    ids = list(Event.objects.filter(workflow=run).order_by("id").values_list("id", flat=True))

    by_header, _ = parse(read_stream(user, f"/api/workflows/{run.pk}/events", headers={"Last-Event-ID": str(ids[2])}))
    by_query, _ = parse(read_stream(user, f"/api/workflows/{run.pk}/events?last_event_id={ids[2]}"))

    assert [event["id"] for event in by_header] == ids[3:]
    assert [event["id"] for event in by_query] == ids[3:]


def test_a_garbage_last_event_id_starts_over_and_says_so(run_inline, user, project):
    run = start(run_inline, user)

    events, comments = parse(read_stream(user, f"/api/workflows/{run.pk}/events?last_event_id=%0Aevent:%20forged"))

    assert [event["event"] for event in events] == FAN_OUT_KINDS
    assert len(comments) == 1 and "not an event id: starting from the beginning" in comments[0]


def test_a_project_stream_carries_every_run_and_pings_when_idle(run_inline, user, project, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"events": settings.MEMORY.events.model_copy(update={"heartbeat_seconds": 0.3})}
    )
    first = start(run_inline, user, text="a")
    second = start(run_inline, user, text="b")

    events, comments = parse(read_stream(user, "/api/projects/proj-001/events", limit=1.5))

    assert [event["data"]["workflow_id"] for event in events] == [str(first.pk)] * len(kinds(first)) + [
        str(second.pk)
    ] * len(kinds(second))
    assert comments.count("ping") >= 2


def test_another_user_gets_a_404_envelope_and_no_stream(run_inline, user, project, other_client):
    run = start(run_inline, user)

    for path in (f"/api/workflows/{run.pk}/events", "/api/projects/proj-001/events"):
        response = other_client.get(path, HTTP_ACCEPT="text/event-stream")
        assert response.status_code == 404
        assert not response.streaming
        assert response.json()["success"] is False
        assert response.json()["error"]["code"] in {"MEMORY_NOT_FOUND", "NOT_FOUND", "PROJECT_NOT_FOUND"}


def test_the_cleanup_deletes_only_events_past_retention(run_inline, user, project, settings):
    run = start(run_inline, user)
    old = list(Event.objects.filter(workflow=run).order_by("id")[:2])
    Event.objects.filter(pk__in=[event.pk for event in old]).update(
        created_at=timezone.now() - timedelta(days=settings.MEMORY.events.retention_days, minutes=1)
    )

    report = events_cleanup()

    assert report == {"deleted": 2, "more": False}
    assert kinds(run) == FAN_OUT_KINDS[2:]


def test_the_stream_listens_where_the_service_publishes():
    assert STREAM_CHANNEL == EVENTS_CHANNEL


def test_served_without_an_event_loop_a_stream_sends_what_is_committed_and_ends(run_inline, user, project, auth_client):
    run = start(run_inline, user)
    ids = list(Event.objects.filter(workflow=run).order_by("id").values_list("id", flat=True))

    # Django's test client is the WSGI app: a project's stream, which never ends under ASGI, ends here.
    response = auth_client.get("/api/projects/proj-001/events", HTTP_LAST_EVENT_ID=str(ids[0]))
    events, _ = parse(b"".join(response.streaming_content))

    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    assert [event["id"] for event in events] == ids[1:]
