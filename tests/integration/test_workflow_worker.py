"""The engine against real Celery workers: the embedded filesystem broker, and Redis.

Leases are short here (WORKFLOW_LEASE_SECONDS) so that recovery after a SIGKILL takes seconds, not minutes.
Effects are rows in ``workflow_test_effects`` written in the transaction that marks a unit done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.db import connection

from comicmem_site.celery import app
from memory_app.errors import Conflict
from memory_app.models import HistoryRecord, UnitStatus, WorkflowState, WorkflowUnit
from tests.workflows.pipelines import effects, effects_table_create
from workflows import engine

pytestmark = pytest.mark.integration

FAST = {"WORKFLOW_LEASE_SECONDS": "3", "WORKFLOW_QUEUE_LEASE_SECONDS": "3", "WORKFLOW_RECOVERY_INTERVAL": "1"}


def wait_for(predicate: Callable[[], bool], *, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(run: WorkflowState) -> str:
    return WorkflowState.objects.values_list("status", flat=True).get(pk=run.pk)


def actions(run: WorkflowState) -> list[str]:
    return list(HistoryRecord.objects.filter(workflow_id=run.pk).order_by("id").values_list("action", flat=True))


@contextmanager
def broker(url: str) -> Iterator[None]:
    """Send from this process through ``url`` (the worker is pointed at it by CELERY_BROKER_URL)."""
    previous = (app.conf.broker_url, app.conf.broker_transport_options)
    app.conf.broker_url, app.conf.broker_transport_options = url, {"visibility_timeout": 3600}
    app._pool, app.amqp._producer_pool = None, None
    try:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("celery")
        yield
    finally:
        app.conf.broker_url, app.conf.broker_transport_options = previous
        app._pool, app.amqp._producer_pool = None, None


@pytest.fixture
def effects_rows(transactional_db) -> None:
    effects_table_create()


def start(user, workflow_type: str, data: dict) -> WorkflowState:
    return engine.workflow_start(user=user, workflow_type=workflow_type, project_id="proj-001", data=data)


@contextmanager
def on_broker(name: str, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The filesystem broker of the embedded mode (the default), or Redis: yields start_worker's arguments."""
    if name == "filesystem":
        yield dict(FAST)
        return
    redis_url = request.getfixturevalue("redis_url")
    with broker(redis_url):
        yield {"broker_url": redis_url, **FAST}


@pytest.mark.parametrize("broker_name", ["filesystem", "redis"])
def test_fan_out_pipeline_runs_end_to_end(start_worker, effects_rows, user, project, request, broker_name):
    with on_broker(broker_name, request) as worker_options:
        start_worker(**worker_options)
        run = start(user, "fan_out", {"text": "a b c"})
        wait_for(lambda: status_of(run) == "completed", what="completion")

    run.refresh_from_db()
    assert run.data["book"] == "<a><b><c>"
    assert run.progress["percent"] == 100.0
    assert sorted(effects(str(run.pk))) == sorted(
        [f"{run.pk}:split:0", f"{run.pk}:bind:0"] + [f"{run.pk}:render:{index}" for index in range(3)]
    )
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 3 + ["workflow_completed"]


def test_transient_errors_retry_and_succeed_on_redis(start_worker, effects_rows, user, project, redis_url):
    with broker(redis_url):
        start_worker(broker_url=redis_url, **FAST)
        run = start(user, "fan_out", {"text": "a b", "faults": {"render": {"transient": 1}}})
        wait_for(lambda: status_of(run) == "completed", what="completion")

    run.refresh_from_db()
    assert run.data["book"] == "<a><b>"
    assert list(WorkflowUnit.objects.filter(workflow=run, step="render").values_list("attempts", flat=True)) == [2, 2]
    assert sorted(effects(str(run.pk))).count(f"{run.pk}:render:0") == 1
    assert "workflow_failed" not in actions(run)


@pytest.mark.slow
@pytest.mark.parametrize("broker_name", ["filesystem", "redis"])
def test_sigkill_during_a_fan_out_then_a_new_worker_completes_each_unit_once(
    start_worker, effects_rows, user, project, request, broker_name
):
    segments = ["a", "b", "c", "d", "e", "f"]

    def render_done() -> int:
        return WorkflowUnit.objects.filter(workflow=run, step="render", status=UnitStatus.DONE).count()

    with on_broker(broker_name, request) as worker_options:
        worker = start_worker(**worker_options)
        run = start(user, "fan_out", {"text": " ".join(segments), "faults": {"render": {"sleep": 0.8}}})
        wait_for(lambda: render_done() >= 2, what="two segments")
        # The filesystem broker loses the messages the dead worker held; Redis would bring them back only
        # after its one-hour visibility timeout. Either way the leases bring the work back within seconds.
        worker.kill()
        killed_at = render_done()
        assert 2 <= killed_at < len(segments)

        start_worker(**worker_options)
        wait_for(lambda: status_of(run) == "completed", timeout=90, what="completion after the crash")

    run.refresh_from_db()
    assert run.data["pages"] == [f"<{segment}>" for segment in segments]
    render_effects = [key for key in effects(str(run.pk)) if ":render:" in key]
    assert sorted(render_effects) == [f"{run.pk}:render:{index}" for index in range(len(segments))]
    assert effects(str(run.pk)).count(f"{run.pk}:bind:0") == 1
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 3 + ["workflow_completed"]


def test_failure_then_resume_redoes_only_the_failed_unit(start_worker, effects_rows, user, project, tmp_path):
    # Three processes take the three units at once (the filesystem broker orders messages sent within the same
    # millisecond by their random ids, so one process could take unit 2 first); unit 2 fails only after 1.5 s,
    # by when the other two are done.
    start_worker(concurrency=3, **FAST)
    flag = tmp_path / "fail"
    flag.touch()
    faults = {"render": {"fail_while_exists": str(flag), "units": [2], "fail_after": 1.5}}
    run = start(user, "fan_out", {"text": "a b c", "faults": faults})
    wait_for(lambda: status_of(run) == "failed", what="failure")
    assert WorkflowUnit.objects.get(workflow=run, step="render", unit_index=2).status == UnitStatus.FAILED
    done = dict(
        WorkflowUnit.objects.filter(workflow=run, step="render", status="done").values_list("unit_index", "attempts")
    )
    assert done == {0: 1, 1: 1}

    flag.unlink()
    results: list[str] = []

    def resume() -> None:
        try:
            engine.workflow_resume(workflow=WorkflowState.objects.get(pk=run.pk), user=user)
            results.append("resumed")
        except Conflict:
            results.append("conflict")
        finally:
            connection.close()

    # Two concurrent resumes: the compare-and-set lets exactly one start the run.
    threads = [threading.Thread(target=resume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: status_of(run) == "completed", what="completion after resume")

    assert sorted(results) == ["conflict", "resumed"]
    assert actions(run).count("workflow_resumed") == 1
    for index, attempts in done.items():
        assert WorkflowUnit.objects.get(workflow=run, step="render", unit_index=index).attempts == attempts
    render_effects = [key for key in effects(str(run.pk)) if ":render:" in key]
    assert sorted(render_effects) == [f"{run.pk}:render:{index}" for index in range(3)]


@pytest.mark.slow
def test_cancel_while_a_step_runs_stops_every_later_step(start_worker, effects_rows, user, project):
    start_worker(**FAST)
    run = start(user, "three_steps", {"text": "x", "faults": {"measure": {"sleep": 2}}})
    wait_for(lambda: WorkflowUnit.objects.filter(workflow=run, status=UnitStatus.RUNNING).exists(), what="step running")

    engine.workflow_cancel(workflow=run, user=user)
    time.sleep(3)  # longer than the step: had it gone on, the next step would have been created by now

    run.refresh_from_db()
    assert run.status == "cancelled"
    assert effects(str(run.pk)) == []
    assert list(WorkflowUnit.objects.filter(workflow=run).values_list("step", flat=True)) == ["measure"]
    assert actions(run) == ["workflow_started", "workflow_cancelled"]
