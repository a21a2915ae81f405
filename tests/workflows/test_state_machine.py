"""A hypothesis state machine over start (with approval pauses) / resume / restore (with edits) / continue / redraw /
cancel (and a fault that comes and goes).

Work runs inline (eager tasks after commit), so after every rule no run is left in progress. Invariants:
- every status change, read off the snapshots in creation order, is a legal transition;
- snapshots are append-only: every one seen before is still there, unchanged, sequences strictly increase;
- progress never goes back within a branch (a ``restored`` snapshot starts a new branch);
- each operation leaves exactly one history record per snapshot of its kind;
- a refused operation changes nothing.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from memory_app.errors import ComicmemError
from memory_app.models import LEGAL_TRANSITIONS, HistoryRecord, WorkflowSnapshot, WorkflowState
from workflows import engine

pytestmark = pytest.mark.django_db

EVENT_ACTIONS = {
    "started": "workflow_started",
    "step_completed": "workflow_step_completed",
    "failed": "workflow_failed",
    "resumed": "workflow_resumed",
    "restored": "workflow_restored",
    "cancelled": "workflow_cancelled",
    "completed": "workflow_completed",
    "awaiting_input": "workflow_awaiting_input",
    "continued": "workflow_continued",
    "forked": "workflow_forked",
}

PAUSES = {"three_steps": ["measure", "shout", "count_words"], "fan_out": ["split", "render", "bind"]}


def test_workflow_operations_keep_their_invariants(
    run_inline, user, project, tmp_path, django_capture_on_commit_callbacks
):
    flag = tmp_path / "fail"

    class WorkflowMachine(RuleBasedStateMachine):
        runs = Bundle("runs")

        @initialize()
        def reset(self) -> None:
            # Each example starts from an empty table, so examples (and their shrinking) do not see each other.
            HistoryRecord.objects.exclude(workflow_id=None).delete()
            WorkflowState.objects.all().delete()
            self.seen: dict[int, tuple] = {}
            flag.unlink(missing_ok=True)

        def state_of(self, run: WorkflowState) -> tuple:
            run.refresh_from_db()
            return (
                run.status,
                run.step_key,
                run.data,
                WorkflowSnapshot.objects.filter(workflow=run).count(),
                HistoryRecord.objects.filter(workflow_id=run.pk).count(),
            )

        def attempt(self, operation, run: WorkflowState, **kwargs) -> None:
            before = self.state_of(run)
            try:
                with django_capture_on_commit_callbacks(execute=True):
                    operation(workflow=run, user=user, **kwargs)
            except ComicmemError:
                assert self.state_of(run) == before

        @rule(
            target=runs,
            workflow_type=st.sampled_from(["three_steps", "fan_out"]),
            failing=st.booleans(),
            pauses=st.sets(st.integers(min_value=0, max_value=2), max_size=2),
        )
        def start(self, workflow_type: str, failing: bool, pauses: set[int]) -> WorkflowState:
            faults = {
                "render": {"fail_while_exists": str(flag), "units": [1]},
                "shout": {"fail_while_exists": str(flag), "units": [0]},
            }
            if failing:
                flag.touch()
            with django_capture_on_commit_callbacks(execute=True):
                run = engine.workflow_start(
                    user=user,
                    workflow_type=workflow_type,
                    project_id="proj-001",
                    data={"text": "a b c", "faults": faults},
                    preferences={"pause_after": [PAUSES[workflow_type][index] for index in sorted(pauses)]},
                )
            return run

        @rule(present=st.booleans())
        def toggle_fault(self, present: bool) -> None:
            if present:
                flag.touch()
            else:
                flag.unlink(missing_ok=True)

        @rule(run=runs)
        def resume(self, run: WorkflowState) -> None:
            self.attempt(engine.workflow_resume, run)

        @rule(
            run=runs,
            index=st.integers(min_value=-12, max_value=12),
            rerun=st.booleans(),
            text=st.sampled_from([None, "d e", "f"]),
            pause=st.sampled_from([None, [], ["measure"], ["render"], ["paint"]]),
        )
        def restore(self, run: WorkflowState, index: int, rerun: bool, text: str | None, pause: list | None) -> None:
            self.attempt(
                engine.workflow_restore,
                run,
                index=index,
                rerun=rerun,
                data_patch={"text": text} if text else None,
                preferences={"pause_after": pause} if pause is not None else None,
            )

        @rule(run=runs, text=st.sampled_from([None, "g h i"]))
        def continue_run(self, run: WorkflowState, text: str | None) -> None:
            self.attempt(engine.workflow_continue_run, run, data_patch={"text": text} if text else None)

        @rule(run=runs, panel=st.integers(min_value=0, max_value=3))
        def redraw(self, run: WorkflowState, panel: int) -> None:
            # fan_out redraws a page in a new run once its book is bound; three_steps has nothing to redraw (refused).
            self.attempt(engine.workflow_redraw, run, panel=panel)

        @rule(run=runs)
        def cancel(self, run: WorkflowState) -> None:
            self.attempt(engine.workflow_cancel, run)

        @invariant()
        def nothing_is_left_running(self) -> None:
            assert not WorkflowState.objects.filter(status="in_progress").exists()

        @invariant()
        def snapshots_are_append_only_and_transitions_legal(self) -> None:
            for run in WorkflowState.objects.all():
                snapshots = list(run.snapshots.order_by("sequence"))
                for snapshot in snapshots:
                    frozen = (snapshot.sequence, snapshot.event, snapshot.status, snapshot.data, snapshot.parent_id)
                    assert self.seen.setdefault(snapshot.pk, frozen) == frozen
                ids = {snapshot.pk for snapshot in snapshots}
                assert {pk for pk, frozen in self.seen.items() if pk in ids} == ids
                sequences = [snapshot.sequence for snapshot in snapshots]
                assert sequences == sorted(set(sequences))
                for earlier, later in pairwise(snapshots):
                    assert later.status == earlier.status or later.status in LEGAL_TRANSITIONS[earlier.status]
            assert set(self.seen) <= set(WorkflowSnapshot.objects.values_list("pk", flat=True))

        @invariant()
        def progress_is_monotonic_within_a_branch(self) -> None:
            for snapshot in WorkflowSnapshot.objects.select_related("parent").exclude(parent=None):
                if snapshot.event == "restored":
                    continue
                parent = snapshot.parent.progress
                assert snapshot.progress["current"] >= parent["current"]
                assert snapshot.progress["percent"] >= parent["percent"]

        @invariant()
        def one_history_record_per_snapshot(self) -> None:
            for run in WorkflowState.objects.all():
                records = list(HistoryRecord.objects.filter(workflow_id=run.pk).values_list("action", flat=True))
                snapshot_actions = [EVENT_ACTIONS[event] for event in run.snapshots.values_list("event", flat=True)]
                assert sorted(records) == sorted(snapshot_actions)

    run_state_machine_as_test(
        WorkflowMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
