"""The engine's side of operations: step metrics and log context from the unit runner, stuck-run handling."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.utils import timezone

from memory_app.instruments import STEP_DURATION, STEP_FAILURES, UNITS_RUNNING
from memory_app.models import HistoryAction, HistoryRecord, UnitStatus, WorkflowState, WorkflowUnit
from workflows import engine, tasks
from workflows.engine import dispatch, runner

pytestmark = pytest.mark.django_db


def observed(workflow_type: str, step: str, outcome: str) -> float:
    # The histogram's count of one label set, read from this process's value (multiprocess or not).
    metric = STEP_DURATION.labels(workflow_type, step, outcome)
    return sum(sample.value for sample in metric._samples() if sample.name == "_count")


def failures(workflow_type: str, step: str, final: str) -> float:
    return STEP_FAILURES.labels(workflow_type, step, final)._value.get()


def test_each_unit_is_timed_per_type_step_and_outcome(run_inline, user, project, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    before = {
        "measure": observed("three_steps", "measure", "done"),
        "shout_retry": observed("three_steps", "shout", "retry"),
        "shout_failed": observed("three_steps", "shout", "failed"),
        "retries": failures("three_steps", "shout", "false"),
        "finals": failures("three_steps", "shout", "true"),
    }
    data = {"text": "a b", "faults": {"shout": {"transient": 1, "fail_while_exists": str(flag)}}}

    run = run_inline(engine.workflow_start, user=user, workflow_type="three_steps", project_id="proj-001", data=data)

    run.refresh_from_db()
    assert run.status == "failed"
    assert observed("three_steps", "measure", "done") == before["measure"] + 1
    assert observed("three_steps", "shout", "retry") == before["shout_retry"] + 1
    assert observed("three_steps", "shout", "failed") == before["shout_failed"] + 1
    assert failures("three_steps", "shout", "false") == before["retries"] + 1
    assert failures("three_steps", "shout", "true") == before["finals"] + 1


def running(workflow_type: str, step: str) -> float:
    # This process's value of the live gauge (the value its multiprocess file holds).
    return UNITS_RUNNING.labels(workflow_type, step)._value.get()


def test_a_unit_counts_as_running_while_its_step_runs_and_not_after(run_inline, user, project, monkeypatch, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    before = {step: running("fan_out", step) for step in ("split", "render", "bind")}
    seen: list[tuple[str, int, float]] = []
    execute = runner._execute

    def spy(unit, run, *continuation):
        seen.append((unit.step, unit.unit_index, running("fan_out", unit.step) - before[unit.step]))
        return execute(unit, run, *continuation)

    monkeypatch.setattr(runner, "_execute", spy)
    # The third panel fails for good: a failing unit leaves the gauge too.
    data = {"text": "a b c", "faults": {"render": {"fail_while_exists": str(flag), "units": [2]}}}

    run = run_inline(engine.workflow_start, user=user, workflow_type="fan_out", project_id="proj-001", data=data)

    run.refresh_from_db()
    assert run.status == "failed"
    assert seen == [("split", 0, 1.0), ("render", 0, 1.0), ("render", 1, 1.0), ("render", 2, 1.0)]
    assert {step: running("fan_out", step) for step in before} == before


def test_lines_logged_while_a_unit_runs_carry_its_workflow_and_step(run_inline, user, project, caplog, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    data = {"text": "a", "faults": {"measure": {"fail_while_exists": str(flag)}}}
    with caplog.at_level(logging.WARNING, logger="workflows.engine"):
        run = run_inline(
            engine.workflow_start, user=user, workflow_type="three_steps", project_id="proj-001", data=data
        )
    from memory_app.logging import RequestContextFilter

    [record] = [r for r in caplog.records if "failed" in r.getMessage()]
    RequestContextFilter().filter(record)
    assert (record.workflow_id, record.step) == (str(run.pk), "measure")


def _stall(run: WorkflowState) -> None:
    before = timezone.now() - dt.timedelta(seconds=1801)
    WorkflowState.objects.filter(pk=run.pk).update(updated_at=before)
    WorkflowUnit.objects.filter(workflow=run).update(updated_at=before)


@pytest.fixture
def stalled(run_inline, user, project, monkeypatch) -> WorkflowState:
    # Messages are lost (a broker outage): the first unit stays pending with a lease far in the future.
    monkeypatch.setattr(dispatch, "units_send_on_commit", lambda units, countdown=None: None)
    run = engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": "a b"})
    monkeypatch.undo()
    _stall(run)
    return run


def test_detection_flags_without_resuming_by_default(stalled):
    outcome = tasks.detect_stuck()

    assert outcome == {"flagged": [str(stalled.pk)], "units_released": 0, "requeued": 0}
    stalled.refresh_from_db()
    assert (stalled.status, stalled.stuck_since is not None) == ("in_progress", True)
    assert HistoryRecord.objects.filter(workflow_id=stalled.pk, action=HistoryAction.WORKFLOW_STUCK).count() == 1
    assert WorkflowUnit.objects.get(workflow=stalled).status == UnitStatus.PENDING


def test_with_resume_stuck_the_engine_recovery_finishes_the_run(stalled, settings, run_inline):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"workflow": settings.MEMORY.workflow.model_copy(update={"resume_stuck": True})}
    )

    outcome = run_inline(tasks.detect_stuck)

    assert outcome == {"flagged": [str(stalled.pk)], "units_released": 1, "requeued": 1}
    stalled.refresh_from_db()
    # Recovery re-enqueued the lost unit; run eagerly, the rest of the run followed, and progress cleared the flag.
    assert (stalled.status, stalled.stuck_since) == ("completed", None)
    assert stalled.data["words"] == 2
