"""Stuck runs (the engine's recovery): a silent run is flagged once in state, history and metric; a unit's update is
progress; the next transition clears the flag; the release ends the leases of the run's unfinished units so recovery
sends them again."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from memory_app.instruments import WORKFLOW_STUCK
from memory_app.models import HistoryAction, HistoryRecord, WorkflowState, WorkflowUnit
from memory_app.services import workflow as state
from workflows.engine import workflow_stuck_flag, workflow_stuck_release
from workflows.engine.units import workflow_units_create

pytestmark = pytest.mark.django_db


def _run(user, project) -> WorkflowState:
    run = state.workflow_create(
        workflow_type="two", project=project, owner=user, steps=["a", "b"], data={}, preferences={}
    )
    workflow_units_create(workflow=run, count=1)
    return run


def _silent(run: WorkflowState, seconds: int) -> None:
    before = timezone.now() - dt.timedelta(seconds=seconds)
    WorkflowState.objects.filter(pk=run.pk).update(updated_at=before)
    WorkflowUnit.objects.filter(workflow=run).update(updated_at=before)


def test_a_recent_unit_update_is_progress(user, project):
    run = _run(user, project)
    _silent(run, 1801)
    WorkflowUnit.objects.filter(workflow=run).update(updated_at=timezone.now())

    assert workflow_stuck_flag() == []
    run.refresh_from_db()
    assert run.stuck_since is None


def test_the_next_transition_clears_the_flag_and_release_ends_leases(user, project):
    run = _run(user, project)
    _silent(run, 1801)
    [flagged] = workflow_stuck_flag()

    assert workflow_stuck_release(workflow=flagged) == 1
    assert WorkflowUnit.objects.get(workflow=run).lease_expires_at < timezone.now()

    state.workflow_cancel(workflow=WorkflowState.objects.get(pk=run.pk), user=user)
    run.refresh_from_db()
    assert (run.status, run.stuck_since) == ("cancelled", None)


def _stuck_count(workflow_type: str) -> float:
    return WORKFLOW_STUCK.labels(workflow_type)._value.get()


def test_a_silent_run_is_flagged_once_in_state_history_and_metric(user, project):
    run = _run(user, project)
    fresh = _run(user, project)
    _silent(run, 1801)
    before = _stuck_count("two")

    flagged = workflow_stuck_flag()

    assert [r.pk for r in flagged] == [run.pk]
    run.refresh_from_db()
    fresh.refresh_from_db()
    assert run.stuck_since is not None and fresh.stuck_since is None
    record = HistoryRecord.objects.get(action=HistoryAction.WORKFLOW_STUCK)
    assert (record.workflow_id, record.details["step"], record.project_id) == (run.pk, "a", project.pk)
    assert record.details["silent_seconds"] >= 1801
    assert _stuck_count("two") == before + 1
    # Flagged already: a second pass changes nothing.
    assert workflow_stuck_flag() == []
    assert HistoryRecord.objects.filter(action=HistoryAction.WORKFLOW_STUCK).count() == 1
