"""Prometheus across processes: step metrics written by a real Celery worker's pool processes, scraped here."""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from prometheus_client.parser import text_string_to_metric_families

from memory_app.models import WorkflowState
from tests.workflows.pipelines import effects_table_create
from workflows import engine

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def render_units_done(client) -> float:
    staff, _ = get_user_model().objects.get_or_create(username="scraper", defaults={"is_staff": True})
    client.force_login(staff)
    response = client.get("/metrics")
    assert response.status_code == 200
    return render_units_in(response.content.decode())


def render_units_in(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "comicmem_workflow_step_duration_seconds_count" and sample.labels == {
                "workflow_type": "fan_out",
                "step": "render",
                "outcome": "done",
            }:
                return sample.value
    return 0.0


def test_a_scrape_sums_the_step_metrics_of_every_worker_process(start_worker, client, user, project):
    effects_table_create()
    before = render_units_done(client)
    port = free_port()
    start_worker(concurrency=2, WORKER_METRICS_PORT=str(port))

    run = engine.workflow_start(user=user, workflow_type="fan_out", project_id="proj-001", data={"text": "a b c d"})
    deadline = time.monotonic() + 60
    while WorkflowState.objects.values_list("status", flat=True).get(pk=run.pk) != "completed":
        assert time.monotonic() < deadline, "the run did not complete"
        time.sleep(0.1)

    assert render_units_done(client) == before + 4
    # The worker's own endpoint (a worker container's scrape target) reads the same folder.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert render_units_in(response.read().decode()) == before + 4
    # Written by other processes (the worker's pool), each into its own file of the shared folder.
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    writers = {path.stem.rsplit("_", 1)[-1] for path in folder.glob("histogram_*.db")}
    assert writers - {str(os.getpid())}


def units_running_in(text: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "comicmem_workflow_units_running" and sample.labels == {
                "workflow_type": "fan_out",
                "step": "render",
            }:
                return sample.value
    return None


@pytest.mark.slow
def test_the_worker_endpoint_shows_a_fan_out_steps_units_running_side_by_side(start_worker, user, project):
    effects_table_create()
    port = free_port()
    start_worker(concurrency=2, WORKER_METRICS_PORT=str(port))
    # Four panels of 1.5 s each on two pool processes: two at a time.
    data = {"text": "a b c d", "faults": {"render": {"sleep": 1.5}}}

    run = engine.workflow_start(user=user, workflow_type="fan_out", project_id="proj-001", data=data)
    seen = set()
    deadline = time.monotonic() + 60
    while WorkflowState.objects.values_list("status", flat=True).get(pk=run.pk) != "completed":
        assert time.monotonic() < deadline, "the run did not complete"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            seen.add(units_running_in(response.read().decode()))
        time.sleep(0.1)

    assert 2.0 in seen
    assert max(value for value in seen if value is not None) == 2.0
    # Once the step is over no unit counts as running (the pool processes are alive: their value is 0).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert units_running_in(response.read().decode()) == 0.0
