"""Fairness between users with a real worker: one user's backlog of runs does not hold the workers; another
user's run, started after the backlog, completes long before the backlog is done."""

from __future__ import annotations

import pytest

from memory_app.models import HistoryRecord, WorkflowState
from tests.factories import ProjectFactory
from tests.integration.test_workflow_worker import FAST, wait_for
from tests.workflows.pipelines import effects_table_create
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACTIVE = 2
BACKLOG = 6


@pytest.fixture
def effects_rows(transactional_db) -> None:
    effects_table_create()


def order(run: WorkflowState, action: str) -> int:
    return HistoryRecord.objects.get(workflow_id=run.pk, action=action).pk


def test_another_users_run_is_not_held_back_by_a_backlog(
    start_worker, effects_rows, user, other_user, project, settings
):
    workflow = settings.MEMORY.workflow.model_copy(update={"max_active_runs_per_user": ACTIVE})
    settings.MEMORY = settings.MEMORY.model_copy(update={"workflow": workflow})
    ProjectFactory(id="theirs", owner=other_user)
    start_worker(WORKFLOW_MAX_ACTIVE_RUNS_PER_USER=str(ACTIVE), **FAST)

    backlog = [
        engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": f"a{n}"})
        for n in range(BACKLOG)
    ]
    theirs = engine.workflow_start(
        user=other_user, workflow_type="three_steps", project_id="theirs", data={"text": "b"}
    )
    assert [run.status for run in backlog] == ["in_progress"] * ACTIVE + ["pending"] * (BACKLOG - ACTIVE)
    assert theirs.status == "in_progress"
    wait_for(
        lambda: WorkflowState.objects.filter(status="completed").count() == BACKLOG + 1, timeout=120, what="all runs"
    )

    # The other user's run completed before the backlog's fifth run had even started.
    assert order(theirs, "workflow_completed") < order(backlog[ACTIVE + 2], "workflow_started")
    # Never more than ACTIVE runs of the backlog in progress at once, and they started in the order accepted.
    spans = [(order(run, "workflow_started"), order(run, "workflow_completed")) for run in backlog]
    for started, _ in spans:
        assert (
            sum(1 for other_started, other_completed in spans if other_started <= started < other_completed) <= ACTIVE
        )
    assert [started for started, _ in spans] == sorted(started for started, _ in spans)
