"""A step that runs longer than its lease keeps it through the heartbeat: recovery, run every second as beat
would, never hands the unit to the second, idle worker, so the step runs once."""

from __future__ import annotations

import time

import pytest

from memory_app.models import UnitStatus, WorkflowUnit
from tests.integration.test_workflow_worker import FAST, actions, status_of, wait_for
from tests.workflows.pipelines import effects, effects_table_create
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEP_SECONDS = 4 * int(FAST["WORKFLOW_LEASE_SECONDS"])


@pytest.fixture
def effects_rows(transactional_db) -> None:
    effects_table_create()


def test_a_step_longer_than_its_lease_is_not_taken_over(start_worker, effects_rows, user, project):
    start_worker(**FAST)
    start_worker(**FAST)
    run = engine.workflow_start(
        user=user,
        workflow_type="three_steps",
        project_id="proj-001",
        data={"text": "long step", "faults": {"measure": {"sleep": STEP_SECONDS}}},
    )
    measure = WorkflowUnit.objects.filter(workflow=run, step="measure")
    wait_for(lambda: measure.filter(status=UnitStatus.RUNNING).exists(), timeout=120, what="the long step")
    requeued = []
    while measure.filter(status=UnitStatus.RUNNING).exists():
        requeued.append(engine.workflow_recover()["requeued"])
        time.sleep(1)
    wait_for(lambda: status_of(run) == "completed", timeout=120, what="completion")

    assert len(requeued) >= 2 * int(FAST["WORKFLOW_LEASE_SECONDS"])  # recovery looked well past the first lease
    assert set(requeued) == {0}

    assert WorkflowUnit.objects.get(workflow=run, step="measure").attempts == 1
    assert list(WorkflowUnit.objects.filter(workflow=run).values_list("status", flat=True)) == [UnitStatus.DONE] * 3
    assert effects(str(run.pk)) == sorted(f"{run.pk}:{step}:0" for step in ["measure", "shout", "count_words"])
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 3 + ["workflow_completed"]
