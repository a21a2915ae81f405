"""Recovery after a SIGKILL with the shipped settings (lease 30 s renewed by the heartbeat, recovery looking again
when the first lease ends, Redis as broker): a fan-out finishes within a minute and a half of the kill, not the
half hour of a lease that had to outlast the task time limit. Two kills: the whole worker (a new one takes
over), and the single pool process running a unit (its worker gives the message back; the redelivery waits for
the dead claim's lease instead of for recovery)."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from django.conf import settings

from memory_app.models import UnitStatus, WorkflowState, WorkflowUnit
from tests.integration.test_workflow_worker import actions, broker, status_of, wait_for
from tests.workflows.pipelines import effects, effects_table_create
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEGMENTS = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
BOUND_SECONDS = 90


@pytest.fixture
def effects_rows(transactional_db) -> None:
    effects_table_create()


@pytest.mark.parametrize("killed", ["worker", "pool_process"])
def test_with_the_default_leases_a_fan_out_recovers_within_seconds_of_a_kill(
    start_worker, effects_rows, user, project, redis_url, killed
):
    assert (settings.MEMORY.workflow.lease_seconds, settings.MEMORY.workflow.recovery_interval) == (30, 10)
    render = WorkflowUnit.objects.filter(step="render")

    with broker(redis_url):
        worker = start_worker(broker_url=redis_url, concurrency=2)  # the shipped settings, no override
        run = engine.workflow_start(
            user=user,
            workflow_type="fan_out",
            project_id="proj-001",
            data={"text": " ".join(SEGMENTS), "faults": {"render": {"sleep": 1}}},
        )
        wait_for(lambda: render.filter(status=UnitStatus.DONE).count() >= 2, what="two segments")
        wait_for(lambda: render.filter(status=UnitStatus.RUNNING).exists(), what="a segment running")
        if killed == "worker":
            worker.kill()
            killed_at = time.monotonic()
            start_worker(broker_url=redis_url, concurrency=2)
        else:
            # The pool process that runs a unit now (its pid is in the unit's lease owner, host:pid:task).
            pid = int(render.filter(status=UnitStatus.RUNNING).values_list("lease_owner", flat=True)[0].split(":")[1])
            assert pid in [child.pid for child in psutil.Process(worker.process.pid).children()]
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
        assert render.filter(status=UnitStatus.DONE).count() < len(SEGMENTS)
        wait_for(lambda: status_of(run) != "in_progress", timeout=BOUND_SECONDS, what="the run after the kill")
        recovered_in = time.monotonic() - killed_at
        print(f"\nkilled {killed}: run completed {recovered_in:.1f} s after the kill")

    run = WorkflowState.objects.get(pk=run.pk)
    assert run.status == "completed"
    assert recovered_in < BOUND_SECONDS
    assert run.data["pages"] == [f"<{segment}>" for segment in SEGMENTS]
    assert list(render.filter(workflow=run).values_list("status", flat=True)) == [UnitStatus.DONE] * len(SEGMENTS)
    assert effects(str(run.pk)) == sorted(
        [f"{run.pk}:split:0", f"{run.pk}:bind:0"] + [f"{run.pk}:render:{index}" for index in range(len(SEGMENTS))]
    )
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 3 + ["workflow_completed"]
    if killed == "pool_process":
        assert worker.process.poll() is None  # the same worker carried on
