"""Continuation in a real Celery worker on Redis: a run's plain steps continue in the process that finished the
previous one, on the run's one message; a worker SIGKILLed between two continued steps leaves a claimed unit that a
new worker completes once its lease is over; a cancel while a continued step runs stops the run there."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import connection

from memory_app.models import UnitStatus, WorkflowState, WorkflowUnit
from tests.integration.test_workflow_worker import FAST, actions, broker, start, status_of, wait_for
from tests.workflows.pipelines import effects, effects_table_create
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TICKS = [f"tick{index}" for index in range(10)]


@pytest.fixture
def effects_rows(transactional_db) -> None:
    effects_table_create()


def task_ids(run: WorkflowState) -> list[str]:
    return list(WorkflowUnit.objects.filter(workflow=run).order_by("step_index").values_list("task_id", flat=True))


def test_a_ten_step_chain_runs_on_one_message(start_worker, effects_rows, user, project, redis_url):
    with broker(redis_url):
        start_worker(broker_url=redis_url, **FAST)
        run = start(user, "ten_steps", {"text": "x"})
        wait_for(lambda: status_of(run) == "completed", what="completion")

    run.refresh_from_db()
    assert run.data["ticks"] == TICKS
    # Every unit ran under the task id of the first message: no other message was sent.
    ids = task_ids(run)
    assert len(ids) == 10 and len(set(ids)) == 1
    assert effects(str(run.pk)) == sorted(f"{run.pk}:{step}:0" for step in TICKS)
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 10 + ["workflow_completed"]


def hold(tmp_path: Path, step: str) -> tuple[Path, dict]:
    flag = tmp_path / f"hold-{step}"
    flag.touch()
    return flag, {"text": "x", "faults": {step: {"hold_while_exists": str(flag)}}}


def test_a_worker_killed_between_two_continued_steps_is_recovered(
    start_worker, effects_rows, user, project, redis_url, tmp_path
):
    flag, data = hold(tmp_path, "tick4")
    with broker(redis_url):
        worker = start_worker(broker_url=redis_url, **FAST)
        run = start(user, "ten_steps", data)
        wait_for(lambda: Path(f"{flag}.running").exists(), what="tick4 to start")
        worker.kill()

        # tick0..tick3 recorded; tick4 claimed, in the transaction that recorded tick3, by the process now dead.
        units = list(WorkflowUnit.objects.filter(workflow=run).order_by("step_index"))
        assert [(unit.step, unit.status) for unit in units] == [
            *((step, UnitStatus.DONE) for step in TICKS[:4]),
            ("tick4", UnitStatus.RUNNING),
        ]
        assert len({unit.task_id for unit in units}) == 1
        flag.unlink()

        start_worker(broker_url=redis_url, **FAST)
        wait_for(lambda: status_of(run) == "completed", timeout=90, what="completion after the kill")

    run.refresh_from_db()
    assert run.data["ticks"] == TICKS
    assert effects(str(run.pk)) == sorted(f"{run.pk}:{step}:0" for step in TICKS)
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 10 + ["workflow_completed"]
    recovered = WorkflowUnit.objects.get(workflow=run, step="tick4")
    assert recovered.attempts == 2
    assert recovered.task_id != units[0].task_id  # sent again by recovery, then continued to the end


def test_a_cancel_while_a_continued_step_runs_stops_the_run(
    start_worker, effects_rows, user, project, redis_url, tmp_path
):
    flag, data = hold(tmp_path, "tick4")
    with broker(redis_url):
        start_worker(broker_url=redis_url, **FAST)
        run = start(user, "ten_steps", data)
        wait_for(lambda: Path(f"{flag}.running").exists(), what="tick4 to start")

        engine.workflow_cancel(workflow=run, user=user)
        flag.unlink()
        time.sleep(3)  # long enough for the chain to have gone on, had it not stopped

    run.refresh_from_db()
    assert run.status == "cancelled"
    assert effects(str(run.pk)) == sorted(f"{run.pk}:{step}:0" for step in TICKS[:4])
    assert list(WorkflowUnit.objects.filter(workflow=run).order_by("step_index").values_list("step", "status")) == [
        *((step, UnitStatus.DONE) for step in TICKS[:4]),
        ("tick4", UnitStatus.CANCELLED),
    ]
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 4 + ["workflow_cancelled"]


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="fan-out lanes run on PostgreSQL only (two connections writing at once)"
)
def test_a_worker_killed_while_its_two_lanes_hold_fan_out_units_is_recovered(
    start_worker, effects_rows, user, project, redis_url, tmp_path
):
    flag, data = hold(tmp_path, "render")
    # Each unit's provider answer is in before it holds: the second lane begins its unit, and holds it too.
    data["faults"]["render"]["answer_first"] = True
    with broker(redis_url):
        # One pool process: the delivered unit and the one its second lane claimed are held by it, side by side.
        worker = start_worker(broker_url=redis_url, **FAST)
        run = start(user, "fan_out", {**data, "text": "a b c d"})

        def two_held() -> bool:
            held = WorkflowUnit.objects.filter(workflow=run, step="render", status=UnitStatus.RUNNING)
            return held.count() == 2

        wait_for(two_held, what="two render units held by the lanes")
        held = list(WorkflowUnit.objects.filter(workflow=run, step="render", status=UnitStatus.RUNNING))
        # Both under the one delivered task (a cancel's revoke reaches both lanes).
        assert len({unit.task_id for unit in held}) == 1
        worker.kill()
        flag.unlink()

        start_worker(broker_url=redis_url, **FAST)
        wait_for(lambda: status_of(run) == "completed", timeout=90, what="completion after the kill")

    run.refresh_from_db()
    assert run.data["book"] == "<a><b><c><d>"
    # Every page's effect exactly once; the two held units were run again after their leases, once each.
    assert effects(str(run.pk)) == sorted(
        [f"{run.pk}:split:0", f"{run.pk}:bind:0", *(f"{run.pk}:render:{index}" for index in range(4))]
    )
    attempts = dict(WorkflowUnit.objects.filter(workflow=run, step="render").values_list("pk", "attempts"))
    assert sorted(attempts[unit.pk] for unit in held) == [2, 2]
