"""Fan-out lanes (PostgreSQL): a process delivered one unit of a fan-out runs more pending units of the step in
two lanes, its own thread and a second one, their provider calls taking turns; every unit is claimed once and
recorded as a delivered unit is, the messages of the units a lane took do nothing, and the unit that finishes the
step continues with the next plain step. Committed transactions (transactional_db), as in a worker."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from memory_app.models import WorkflowState, WorkflowUnit
from memory_app.providers.turns import ProviderTurns, provider_turn_end, provider_turns
from tests.workflows import pipelines
from tests.workflows.pipelines import effects
from tests.workflows.test_continuation import deliver, limit, sent, start  # noqa: F401 - ``sent`` is a fixture
from workflows import engine
from workflows.engine import steps
from workflows.engine.units import Continuation, workflow_unit_claim_sibling

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="fan-out lanes run on PostgreSQL only (two connections writing at once)"
)


def units(run: WorkflowState) -> list[tuple[int, str, int, str]]:
    return list(
        WorkflowUnit.objects.filter(workflow=run, step="render")
        .order_by("unit_index")
        .values_list("unit_index", "status", "attempts", "task_id")
    )


def test_one_message_runs_the_whole_fan_out_in_two_lanes_and_continues(sent, user, project):  # noqa: F811
    run = start(user, "fan_out", {"text": "a b c d e"})
    deliver(sent[0])  # split: its next step fans out
    renders = sent[1:]
    assert len(renders) == 5

    outcome = deliver(renders[0])

    assert (outcome["outcome"], outcome["alongside"], outcome["continued"]) == ("done", 4, 1)
    run.refresh_from_db()
    assert (run.status, run.data["book"]) == ("completed", "<a><b><c><d><e>")
    # Each unit claimed once, all under the delivered message's task id (a cancel's revoke reaches both lanes).
    assert units(run) == [(index, "done", 1, renders[0][1]) for index in range(5)]
    assert effects(str(run.pk)).count(f"{run.pk}:render:3") == 1
    # The other messages find their units done: nothing runs again, nothing is sent again.
    assert [deliver(message)["outcome"] for message in renders[1:]] == ["skipped"] * 4
    assert len(sent) == 6


def test_the_message_of_a_unit_a_lane_holds_does_nothing(sent, user, project):  # noqa: F811
    run = start(user, "fan_out", {"text": "a b"})
    deliver(sent[0])
    first, second = sent[1:]
    holder = Continuation(lease_owner="host:1:lane", task_id=first[1])
    unit = WorkflowUnit.objects.get(pk=first[0])
    taken = workflow_unit_claim_sibling(unit=unit, continuation=holder)
    assert taken is not None and taken.unit_index == 0 and taken.task_id == first[1]

    # The lane takes the second unit too, under its own (the first message's) task.
    other = workflow_unit_claim_sibling(unit=unit, continuation=holder)
    assert other is not None and other.pk == second[0]
    # Its message finds it held under another task: not sent again for after the lease, it does nothing.
    assert deliver(second) == {"unit": second[0], "outcome": "skipped"}
    assert len(sent) == 3
    # Nothing is left to claim.
    assert workflow_unit_claim_sibling(unit=unit, continuation=holder) is None
    run.refresh_from_db()
    assert run.status == "in_progress"


def test_a_lane_never_takes_a_unit_waiting_out_a_retry(sent, user, project):  # noqa: F811
    run = start(user, "fan_out", {"text": "a b"})
    deliver(sent[0])
    WorkflowUnit.objects.filter(workflow=run, step="render", unit_index=0).update(attempts=1, error={"type": "x"})
    unit = WorkflowUnit.objects.get(workflow=run, step="render", unit_index=1)
    holder = Continuation(lease_owner="host:1:lane", task_id="t")

    taken = workflow_unit_claim_sibling(unit=unit, continuation=holder)

    assert taken is not None and taken.unit_index == 1
    assert workflow_unit_claim_sibling(unit=unit, continuation=holder) is None


def test_a_lane_begins_a_unit_only_once_the_other_lanes_answer_is_in(
    sent,  # noqa: F811
    user,
    project,
    monkeypatch,
):
    spans: list[tuple[int, float, float]] = []
    lock = threading.Lock()

    def render(context: Any) -> str:
        began = time.monotonic()
        time.sleep(0.03)  # the provider's call
        answered = time.monotonic()
        provider_turn_end()
        with lock:
            spans.append((threading.get_ident(), began, answered))
        time.sleep(0.03)  # storing the answer, while the other lane's unit begins
        return pipelines.render_segment(context)

    turned = engine.WorkflowType(
        name="fan_out",
        steps=(
            pipelines.FAN_OUT.steps[0],
            engine.FanOutStep("render", items=lambda data: data["segments"], run=render, merge=pipelines.merge_pages),
            pipelines.FAN_OUT.steps[2],
        ),
    )
    monkeypatch.setitem(steps._REGISTRY, "fan_out", turned)
    run = start(user, "fan_out", {"text": "a b c d e f"})
    deliver(sent[0])

    outcome = deliver(sent[1])

    assert outcome["alongside"] == 5
    run.refresh_from_db()
    assert (run.status, run.data["book"]) == ("completed", "<a><b><c><d><e><f>")
    # Two threads ran the units; no two units were ever before their answers at once, and the storing of one
    # overlapped the next one's call.
    assert len({thread for thread, _, _ in spans}) == 2
    ordered = sorted((began, answered) for _, began, answered in spans)
    assert all(answered <= next_began for (_, answered), (next_began, _) in itertools.pairwise(ordered))
    assert any(next_began < answered + 0.03 for (_, answered), (next_began, _) in itertools.pairwise(ordered))


def test_a_failed_unit_stops_both_lanes(sent, user, project, tmp_path):  # noqa: F811
    flag = tmp_path / "fail"
    flag.touch()
    # Every unit takes 0.2 s; the delivered one then fails, and the run with it.
    faults = {"render": {"sleep": 0.2, "fail_while_exists": str(flag), "units": [0]}}
    run = start(user, "fan_out", {"text": "a b c d e f g h", "faults": faults})
    deliver(sent[0])

    outcome = deliver(sent[1])

    assert outcome["outcome"] == "failed"
    run.refresh_from_db()
    assert run.status == "failed"
    # The other lane claims nothing once the run failed: the units not begun stay pending, for a resume.
    statuses = [status for _, status, _, _ in units(run)]
    assert statuses[0] == "failed" and statuses[-1] == "pending"


def test_lanes_off_runs_one_unit_per_message(sent, user, project, settings):  # noqa: F811
    limit(settings, fan_out_lanes=False)
    start(user, "fan_out", {"text": "a b"})
    deliver(sent[0])

    outcome = deliver(sent[1])

    assert "alongside" not in outcome
    assert WorkflowUnit.objects.filter(step="render", status="pending").count() == 1


def test_a_turn_waits_for_the_other_threads_answer_and_is_free_without_turns():
    turns = ProviderTurns()
    order: list[str] = []
    turns.begin()  # this thread's unit, before its answer

    def other() -> None:
        with provider_turns(turns):
            turns.begin()
            order.append("other began")

    thread = threading.Thread(target=other)
    thread.start()
    time.sleep(0.05)
    order.append("answer in")
    with provider_turns(turns):
        provider_turn_end()
    thread.join(5)
    assert order == ["answer in", "other began"]
    # A thread given no turns is never held.
    provider_turn_end()


def test_a_lane_takes_over_the_other_lanes_unit_of_its_own_dead_task_once_its_lease_is_over(
    sent,  # noqa: F811
    user,
    project,
):
    run = start(user, "fan_out", {"text": "a b"})
    deliver(sent[0])
    first, second = sent[1:]
    unit = WorkflowUnit.objects.get(pk=first[0])
    dead = Continuation(lease_owner="host:1:dead", task_id=first[1])
    held = workflow_unit_claim_sibling(unit=unit, continuation=dead)
    orphan = workflow_unit_claim_sibling(unit=unit, continuation=dead)
    assert (held.pk, orphan.pk) == (first[0], second[0])
    # The process died holding both; its message, given back, is run again under the same task.
    WorkflowUnit.objects.filter(workflow=run, step="render").update(lease_expires_at=timezone.now())
    other_task = Continuation(lease_owner="host:2:other", task_id=second[1])
    assert workflow_unit_claim_sibling(unit=unit, continuation=other_task) is None

    again = deliver(first)

    assert (again["outcome"], again["alongside"]) == ("done", 1)
    run.refresh_from_db()
    assert (run.status, run.data["book"]) == ("completed", "<a><b>")
    assert [attempts for _, _, attempts, _ in units(run)] == [2, 2]
