"""A task enqueued inside a transaction that rolls back is never sent, so it never runs: a real worker on the
embedded broker sees only the runs whose transaction committed."""

from __future__ import annotations

import pytest
from django.db import transaction

from memory_app.models import WorkflowState, WorkflowUnit
from tests.integration.test_workflow_worker import FAST, actions, status_of, wait_for
from tests.workflows.pipelines import effects, effects_table_create
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def effects_rows(transactional_db) -> None:
    effects_table_create()


class RolledBack(Exception):
    pass


def start(user, text: str) -> WorkflowState:
    return engine.workflow_start(user=user, workflow_type="three_steps", project_id="proj-001", data={"text": text})


def test_a_run_started_in_a_transaction_that_rolls_back_never_runs(start_worker, effects_rows, user, project):
    worker = start_worker(**FAST)

    with pytest.raises(RolledBack), transaction.atomic():
        doomed = start(user, "doomed")
        doomed_tasks = list(WorkflowUnit.objects.filter(workflow=doomed).values_list("task_id", flat=True))
        raise RolledBack
    assert len(doomed_tasks) == 1 and doomed_tasks[0]

    kept = start(user, "kept")
    wait_for(lambda: status_of(kept) == "completed", timeout=120, what="the committed run")

    assert not WorkflowState.objects.filter(pk=doomed.pk).exists()
    assert effects(str(doomed.pk)) == []
    assert effects(str(kept.pk)) == sorted(f"{kept.pk}:{step}:0" for step in ["measure", "shout", "count_words"])
    log = worker.output()
    assert doomed_tasks[0] not in log
    kept_tasks = WorkflowUnit.objects.filter(workflow=kept).values_list("task_id", flat=True)
    assert all(task_id in log for task_id in kept_tasks)
    assert actions(kept)[-1] == "workflow_completed"
