"""Live events end to end with real processes: a Celery worker runs the steps, uvicorn serves the ASGI app, and an
SSE client (httpx-sse) follows the run, disconnects in the middle and resumes with Last-Event-ID.

Embedded mode: the filesystem broker, streams poll the events table. Redis mode: the Redis broker, and streams
are woken by Redis pub/sub; their poll interval and heartbeat are set far beyond the run's length, so the run is
followed in time only if the wake-ups arrive.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from rest_framework.authtoken.models import Token

from memory_app.models import Event, WorkflowState
from tests.conftest import REPO_ROOT, subprocess_env
from tests.integration.test_workflow_worker import FAST, broker
from tests.workflows.pipelines import effects_table_create
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPECTED_KINDS = [
    "workflow.status",
    "step.completed",
    "workflow.progress",
    "workflow.progress",
    "workflow.progress",
    "step.completed",
    "step.completed",
    "workflow.completed",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def asgi_server(tmp_path: Path, **env: str) -> Iterator[str]:
    """``uvicorn comicmem_site.asgi:application`` on a free port; yields its base URL."""
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("uvicorn")),
                "comicmem_site.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=subprocess_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log_path.read_text(errors="replace")
                try:
                    urllib.request.urlopen(f"{base}/api/health/", timeout=2).read()
                    break
                except OSError:
                    assert time.monotonic() < deadline, log_path.read_text(errors="replace")
                    time.sleep(0.2)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=10)


def auth(user: Any) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def follow(
    base: str,
    path: str,
    user: Any,
    *,
    last_event_id: int | None = None,
    stop: Callable[[list[Any]], bool] | None = None,
) -> list[tuple[int, str, dict[str, Any]]]:
    """Read the stream until it ends (or ``stop`` says so, then disconnect): (id, event, data) of each event."""
    headers = auth(user)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    received: list[tuple[int, str, dict[str, Any]]] = []
    with (
        httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=60)) as client,
        connect_sse(client, "GET", path, headers=headers) as source,
    ):
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            if not sse.data:
                continue  # the "retry:" block: a setting for the client, no event
            received.append((int(sse.id), sse.event, sse.json()))
            if stop is not None and stop(received):
                break
    return received


def table(run: WorkflowState) -> list[tuple[int, str]]:
    return list(Event.objects.filter(workflow=run).order_by("id").values_list("id", "kind"))


@pytest.mark.parametrize("mode", ["embedded", "redis"])
def test_a_client_follows_a_run_on_a_real_worker_and_resumes_without_loss(
    start_worker, user, project, tmp_path, request, settings, mode
):
    effects_table_create()
    if mode == "embedded":
        options: dict[str, str] = {**FAST, "EVENTS_POLL_INTERVAL_SECONDS": "0.2"}
        sending: AbstractContextManager[None] = nullcontext()
    else:
        redis_url = request.getfixturevalue("redis_url")
        # Far beyond the run: only a Redis wake-up can bring the events in time.
        options = {
            **FAST,
            "REDIS_URL": redis_url,
            "EVENTS_POLL_INTERVAL_SECONDS": "600",
            "EVENTS_HEARTBEAT_SECONDS": "600",
        }
        settings.REDIS_URL = redis_url
        sending = broker(redis_url)
    with sending:
        start_worker(**({"broker_url": options["REDIS_URL"]} if mode == "redis" else {}), **options)
        with asgi_server(tmp_path, **options) as base:
            run = engine.workflow_start(
                user=user,
                workflow_type="fan_out",
                project_id="proj-001",
                data={"text": "a b c", "faults": {"render": {"sleep": 0.7}, "bind": {"sleep": 0.5}}},
            )
            path = f"/api/workflows/{run.pk}/events"
            started = time.monotonic()

            # The first connection drops in the middle of the run, after three events…
            first = follow(base, path, user, stop=lambda received: len(received) == 3)
            state = WorkflowState.objects.get(pk=run.pk)
            assert state.status == "in_progress", state.error
            # …and the browser reconnects with the last id it saw: the rest, until the terminal event, then the end.
            rest = follow(base, path, user, last_event_id=first[-1][0])
            elapsed = time.monotonic() - started
            # An ended run's stream, opened again from the start, sends everything and ends at once.
            replay = follow(base, path, user)

    assert [(event_id, kind) for event_id, kind, _ in first + rest] == table(run)
    assert [kind for _, kind, _ in first + rest] == EXPECTED_KINDS
    assert [event_id for event_id, _, _ in replay] == [event_id for event_id, _ in table(run)]
    assert rest[-1][2]["status"] == "completed" and rest[-1][2]["workflow_id"] == str(run.pk)
    assert elapsed < 60


def test_an_idle_project_stream_gets_heartbeats_and_a_stranger_gets_404(
    transactional_db, user, other_user, project, tmp_path
):
    with asgi_server(tmp_path, EVENTS_HEARTBEAT_SECONDS="0.4") as base:
        lines: list[str] = []
        with httpx.Client(base_url=base, timeout=10) as client:
            with client.stream("GET", "/api/projects/proj-001/events", headers=auth(user)) as response:
                assert response.status_code == 200
                deadline = time.monotonic() + 1.5
                for line in response.iter_lines():
                    lines.append(line)
                    if time.monotonic() > deadline:
                        break
            refused = client.get("/api/projects/proj-001/events", headers=auth(other_user))

    assert lines[0] == "retry: 2000"
    assert lines.count(": ping") >= 2
    assert not any(line.startswith("id:") for line in lines)
    assert refused.status_code == 404
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.json()["success"] is False
