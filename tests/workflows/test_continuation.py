"""Continuation: the process that records a plain step runs the run's next plain step itself, claimed in the same
transaction, without a message through the broker; every step still commits its own records, a process that dies
between two steps leaves a claimed unit that recovery sends again, a cancel between two steps stops the run, and
fan-out units are still sent. Committed transactions (transactional_db), as in a worker: inside a caller's
transaction the engine never continues."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from memory_app.models import (
    Event,
    HistoryRecord,
    SearchEntry,
    UnitStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WorkflowState,
    WorkflowUnit,
)
from tests.workflows.pipelines import effects, effects_table_create
from workflows import engine, tasks
from workflows.engine import runner

TICKS = [f"tick{index}" for index in range(10)]


@pytest.fixture
def sent(transactional_db, monkeypatch) -> list[tuple[int, str]]:
    """The ``workflows.run_unit`` messages sent (unit id, task id), in order; none is delivered by itself."""
    effects_table_create()
    messages: list[tuple[int, str]] = []

    def apply_async(args: tuple[Any, ...], task_id: str, countdown: float | None = None, **kwargs: Any) -> None:
        messages.append((args[0], task_id))

    monkeypatch.setattr(tasks.run_unit, "apply_async", apply_async)
    return messages


def deliver(message: tuple[int, str]) -> dict[str, Any]:
    """What the task does with one message, in this process."""
    unit_id, task_id = message
    return engine.unit_execute(unit_id=unit_id, lease_owner=engine.lease_owner_name(task_id), task_id=task_id)


def start(user: Any, workflow_type: str = "ten_steps", data: dict[str, Any] | None = None) -> WorkflowState:
    return engine.workflow_start(
        user=user, workflow_type=workflow_type, project_id="proj-001", data=data or {"text": "x"}
    )


def actions(run: WorkflowState) -> list[str]:
    return list(HistoryRecord.objects.filter(workflow_id=run.pk).order_by("id").values_list("action", flat=True))


def units(run: WorkflowState) -> list[tuple[str, str, str, int]]:
    return list(
        WorkflowUnit.objects.filter(workflow=run)
        .order_by("step_index", "created_at")
        .values_list("step", "status", "task_id", "attempts")
    )


def limit(settings, **values: Any) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"workflow": settings.MEMORY.workflow.model_copy(update=values)}
    )


def test_a_ten_step_chain_runs_on_one_message_and_records_every_step(sent, user, project):
    run = start(user)
    assert len(sent) == 1

    outcome = deliver(sent[0])

    assert outcome["outcome"] == "done"
    assert outcome["continued"] == 9
    assert len(sent) == 1  # no message after the first
    run.refresh_from_db()
    assert run.status == "completed"
    assert run.data["ticks"] == TICKS
    # Each step committed its own records, as a step sent through the broker does.
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 10 + ["workflow_completed"]
    assert list(run.snapshots.filter(event="step_completed").order_by("sequence").values_list("step", flat=True)) == (
        TICKS
    )
    assert effects(str(run.pk)) == sorted(f"{run.pk}:{step}:0" for step in TICKS)
    # One unit per step, each claimed once, all under the task id of the one message (a cancel revokes it).
    assert units(run) == [(step, "done", sent[0][1], 1) for step in TICKS]


def test_the_chain_hands_back_to_the_broker_after_max_continued_steps(sent, user, project, settings):
    limit(settings, max_continued_steps=3)
    run = start(user)

    outcomes = []
    while len(outcomes) < len(sent):
        outcomes.append(deliver(sent[len(outcomes)]))

    assert [outcome.get("continued") for outcome in outcomes] == [3, 3, 1]
    # The steps after each bound went as a message with a task id of its own.
    assert [unit_id for unit_id, _ in sent[1:]] == list(
        WorkflowUnit.objects.filter(workflow=run, step__in=["tick4", "tick8"])
        .order_by("step_index")
        .values_list("pk", flat=True)
    )
    assert len({task_id for _, task_id in sent}) == 3
    run.refresh_from_db()
    assert (run.status, run.data["ticks"]) == ("completed", TICKS)


def test_no_continuation_past_max_continued_seconds(sent, user, project, settings):
    limit(settings, max_continued_seconds=0)
    run = start(user)

    for message in sent:  # grows as each step sends the next
        assert "continued" not in deliver(message)

    assert len(sent) == 10
    run.refresh_from_db()
    assert run.status == "completed"


def test_fan_out_units_are_sent_and_the_last_one_continues_with_the_next_plain_step(sent, user, project, settings):
    # One unit per message (without the lanes of tests/workflows/test_fan_out_lanes.py, which run more per message).
    limit(settings, fan_out_lanes=False)
    run = start(user, "fan_out", {"text": "a b c"})

    assert "continued" not in deliver(sent[0])  # split: its next step fans out

    renders = sent[1:]
    assert len(renders) == 3 and len({task_id for _, task_id in renders}) == 3
    outcomes = [deliver(message) for message in renders]
    assert [outcome.get("continued") for outcome in outcomes] == [None, None, 1]
    assert len(sent) == 4
    run.refresh_from_db()
    assert (run.status, run.data["book"]) == ("completed", "<a><b><c>")
    assert WorkflowUnit.objects.get(workflow=run, step="bind").task_id == renders[-1][1]


class Died(BaseException):
    """The process dies here: nothing of the engine catches it."""


def at_step(monkeypatch, step: str, action) -> None:
    """Do ``action(unit)`` when the unit of ``step`` is about to run: after the transaction that recorded the step
    before it, and claimed this one, committed."""

    class Heartbeat(engine.LeaseHeartbeat):
        def __enter__(self) -> engine.LeaseHeartbeat:
            if self.unit.step == step:
                action(self.unit)
            return super().__enter__()

    monkeypatch.setattr(runner, "LeaseHeartbeat", Heartbeat)


def test_a_process_dead_between_two_continued_steps_leaves_a_claimed_unit_that_recovery_sends_again(
    sent, user, project, monkeypatch
):
    alive: list[bool] = []

    def die(unit: WorkflowUnit) -> None:
        if not alive:
            raise Died

    at_step(monkeypatch, "tick4", die)
    run = start(user)
    with pytest.raises(Died):
        deliver(sent[0])

    # tick0..tick3 are recorded; tick4 is claimed by the dead process, under a lease, and no message carries it.
    claimed = WorkflowUnit.objects.get(workflow=run, step="tick4")
    assert (claimed.status, claimed.attempts, claimed.task_id) == (UnitStatus.RUNNING, 1, sent[0][1])
    assert claimed.lease_owner == engine.lease_owner_name(sent[0][1])
    assert claimed.lease_expires_at > timezone.now()
    assert actions(run).count("workflow_step_completed") == 4
    assert len(sent) == 1
    assert engine.workflow_recover()["requeued"] == 0  # its lease still runs

    alive.append(True)  # a new process: it does not die
    WorkflowUnit.objects.filter(pk=claimed.pk).update(lease_expires_at=timezone.now())
    assert engine.workflow_recover()["requeued"] == 1
    assert sent[1][0] == claimed.pk and sent[1][1] != sent[0][1]
    assert deliver(sent[1])["continued"] == 5

    run.refresh_from_db()
    assert (run.status, run.data["ticks"]) == ("completed", TICKS)
    assert effects(str(run.pk)) == sorted(f"{run.pk}:{step}:0" for step in TICKS)
    assert actions(run).count("workflow_step_completed") == 10
    assert WorkflowUnit.objects.get(pk=claimed.pk).attempts == 2


def test_a_cancel_between_two_continued_steps_stops_the_run(sent, user, project, monkeypatch):
    revoked: list[list[str]] = []
    monkeypatch.setattr("workflows.engine.operations.revoke", revoked.append)
    at_step(
        monkeypatch,
        "tick3",
        lambda unit: engine.workflow_cancel(workflow=WorkflowState.objects.get(pk=unit.workflow_id), user=user),
    )
    run = start(user)

    outcome = deliver(sent[0])

    assert (outcome["outcome"], outcome["continued"]) == ("skipped", 3)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert effects(str(run.pk)) == sorted(f"{run.pk}:{step}:0" for step in TICKS[:3])
    assert [(step, status) for step, status, _, _ in units(run)] == [
        ("tick0", "done"),
        ("tick1", "done"),
        ("tick2", "done"),
        ("tick3", "cancelled"),
    ]
    # The cancel revoked the task the chain runs under: in a worker, that stops the step running.
    assert revoked == [[sent[0][1]]]
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 3 + ["workflow_cancelled"]
    assert len(sent) == 1


def test_a_pause_after_a_step_ends_the_chain(sent, user, project):
    run = engine.workflow_start(
        user=user,
        workflow_type="ten_steps",
        project_id="proj-001",
        data={"text": "x"},
        preferences={"pause_after": ["tick2"]},
    )

    assert deliver(sent[0])["continued"] == 2

    run.refresh_from_db()
    assert (run.status, run.current_step) == ("awaiting_input", "tick3")
    assert not WorkflowUnit.objects.filter(workflow=run, step="tick3").exists()
    assert len(sent) == 1


def statements(captured: CaptureQueriesContext) -> int:
    """Statements sent, less transaction control (SQLite's BEGIN and COMMIT are statements, PostgreSQL's are not)."""
    control = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK")
    # A PREPARE is sent once per connection and statement (memory_app.prepared), not per step.
    return sum(1 for query in captured.captured_queries if not query["sql"].startswith((*control, "PREPARE ")))


def test_a_continued_step_costs_two_statements_fewer_than_a_delivered_one(sent, user, project, settings):
    # Outside any transaction, as in a worker: a delivered step claims (UPDATE) and reads its unit with the run,
    # project and owner (SELECT), then records. On PostgreSQL the record is one statement (``workflow_step_advance``:
    # lock the run, mark the unit done, the snapshot, the run's compare-and-set, the step's live event, the history
    # record and its search index row, the next step's unit), with the step's effect beside it in its transaction.
    # On SQLite it is a transaction of ten: lock the run, mark the unit done, the step's effect, the snapshot sequence
    # and count, the snapshot, the run's compare-and-set, the event, the history record, its index row, the next
    # step's unit. A continued step's unit was created claimed by that last INSERT, with the run it runs on in hand:
    # no claim, no read.
    record = 1 + 1 if connection.vendor == "postgresql" else 10
    start(user, "three_steps")
    with CaptureQueriesContext(connection) as continued:
        assert deliver(sent[0])["continued"] == 2

    limit(settings, max_continued_steps=0)
    start(user, "three_steps")
    delivered: list[int] = []
    while len(sent) > 1 + len(delivered):  # each step sends the next
        with CaptureQueriesContext(connection) as captured:
            assert "continued" not in deliver(sent[1 + len(delivered)])
        delivered.append(statements(captured))

    assert delivered[:2] == [2 + record, 2 + record]
    assert statements(continued) == (2 + record) + record + (delivered[2] - 2)


def test_the_message_given_back_by_a_process_dead_in_a_continued_step_is_sent_again_for_that_step(
    sent, user, project, monkeypatch
):
    alive: list[bool] = []

    def die(unit: WorkflowUnit) -> None:
        if not alive:
            raise Died

    at_step(monkeypatch, "tick4", die)
    run = start(user)
    with pytest.raises(Died):
        deliver(sent[0])
    alive.append(True)
    claimed = WorkflowUnit.objects.get(workflow=run, step="tick4")

    # The worker gives the dead process's message back (reject_on_worker_lost): its own unit is done, but the step
    # its chain continued to is held by the dead claim, so the message is sent again for that step, to arrive just
    # after the lease ends.
    outcome = deliver(sent[0])
    assert (outcome["outcome"], outcome["unit"]) == ("held", claimed.pk)
    assert sent[1] == (claimed.pk, sent[0][1])

    WorkflowUnit.objects.filter(pk=claimed.pk).update(lease_expires_at=timezone.now())
    assert deliver(sent[1])["continued"] == 5
    run.refresh_from_db()
    assert (run.status, run.data["ticks"]) == ("completed", TICKS)
    assert effects(str(run.pk)) == sorted(f"{run.pk}:{step}:0" for step in TICKS)


def test_a_continued_plain_step_is_recorded_in_one_statement_on_postgresql(sent, user, project, monkeypatch):
    # Between the start of one step and the start of the next: the first step's record and the next step's claim.
    # On PostgreSQL one statement, its own transaction (``workflow_step_advance``); on SQLite the transaction of
    # nine (lock the run, mark the unit done, the snapshot sequence and count, the snapshot, the run's
    # compare-and-set, the event, the history record, its index row, the next step's unit).
    marks: list[int] = []

    class Heartbeat(engine.LeaseHeartbeat):
        def __enter__(self) -> engine.LeaseHeartbeat:
            marks.append(statements(captured))
            return super().__enter__()

    monkeypatch.setattr(runner, "LeaseHeartbeat", Heartbeat)
    run = start(user, "plain_steps")
    with CaptureQueriesContext(connection) as captured:
        assert deliver(sent[0])["continued"] == 3

    per_step = [after - before for before, after in itertools.pairwise(marks)]
    assert per_step == ([1, 1, 1] if connection.vendor == "postgresql" else [9, 9, 9])
    if connection.vendor == "postgresql":
        # The statement is prepared once per connection (its CTEs took longer to plan than to run), maybe by an
        # earlier run on it, and each step executes it.
        advances = [query["sql"] for query in captured.captured_queries if "comicmem_step_advance_" in query["sql"]]
        assert sum(sql.startswith("PREPARE ") for sql in advances) <= 1
        assert sum(sql.startswith("EXECUTE ") for sql in advances) == 3
    run.refresh_from_db()
    assert (run.status, run.data["ticks"]) == ("completed", ["plain0", "plain1", "plain2", "plain3"])


def deliver_all(sent: list[tuple[int, str]], first: int) -> None:
    """Deliver the messages from ``first`` on, each step's message as it is sent."""
    while first < len(sent):
        deliver(sent[first])
        first += 1


def recorded(run: WorkflowState) -> dict[str, Any]:
    """Everything a run's steps committed, without what differs from run to run (keys, times, ids)."""
    run.refresh_from_db()
    sequences = dict(run.snapshots.values_list("id", "sequence"))
    history = HistoryRecord.objects.filter(workflow_id=run.pk).order_by("id")
    return {
        "run": (run.status, run.data, run.step_index, run.current_step, run.progress, run.compression_history),
        "head": sequences[run.head_id],
        "snapshots": [
            (s.sequence, sequences.get(s.parent_id), s.event, s.step, s.step_index, s.status, s.data, s.progress)
            for s in run.snapshots.order_by("sequence")
        ],
        "events": [
            (event.kind, {**event.data, "workflow_id": None})
            for event in Event.objects.filter(workflow=run).order_by("id")
        ],
        "history": [
            (record.action, record.summary, record.details, record.user_id, record.project_id) for record in history
        ],
        "index": [
            (entry.kind, entry.owner_id, entry.project_id, entry.text, entry.tokens, entry.text_hash)
            for entry in SearchEntry.objects.filter(history__in=history).order_by("history_id")
        ],
        "units": [
            (unit.step, unit.step_index, unit.status, unit.attempts, unit.result, unit.error, unit.lease_owner != "")
            for unit in WorkflowUnit.objects.filter(workflow=run).order_by("step_index")
        ],
        "webhooks": [
            (delivery.event, {**delivery.body["data"], "workflow_id": None}, delivery.status)
            for delivery in WebhookDelivery.objects.filter(body__data__workflow_id=str(run.pk)).order_by("id")
        ],
    }


@pytest.mark.parametrize("continued", [True, False])
def test_one_statement_records_what_the_transaction_of_ten_records(
    sent, user, project, settings, monkeypatch, continued
):
    # Few snapshots kept: the one statement's run goes through the trimming as the transaction's does (its snapshots
    # are all on its branch: none goes).
    limit(settings, max_state_history=4, keep_state_history=2, **({} if continued else {"max_continued_steps": 0}))
    monkeypatch.setattr("memory_app.services.webhooks._send_on_commit", lambda delivery_id: None)
    WebhookEndpoint.objects.create(owner=user, url="https://hooks.example.com/in", events=["workflow.completed"])
    one = start(user, "plain_steps")
    deliver_all(sent, 0)

    monkeypatch.setattr(runner, "workflow_step_advance_supported", lambda: False)
    ten = start(user, "plain_steps")
    deliver_all(sent, len(sent) - 1)

    assert recorded(one) == recorded(ten)
    assert recorded(one)["run"][5] == [
        {"step": step, "input_size": 10, "output_size": 5, "compression_ratio": 0.5} for step in ("plain0", "plain1")
    ]
    assert recorded(one)["run"][1]["api_key"] != "sk-secret"
    assert [event for event, _, _ in recorded(one)["webhooks"]] == ["workflow.completed"]


def test_a_step_whose_claim_was_taken_over_records_nothing(sent, user, project, monkeypatch):
    # While the step runs, its lease ends and another worker claims the unit (a new claim token): the step's result
    # is not recorded, the run stays on that step for the unit's new holder.
    def take_over(unit: WorkflowUnit) -> None:
        WorkflowUnit.objects.filter(pk=unit.pk).update(claim_token=uuid.uuid4(), attempts=2)

    at_step(monkeypatch, "plain2", take_over)
    run = start(user, "plain_steps")

    outcome = deliver(sent[0])

    assert (outcome["outcome"], outcome["continued"]) == ("skipped", 2)
    run.refresh_from_db()
    assert (run.status, run.current_step, run.data["ticks"]) == ("in_progress", "plain2", ["plain0", "plain1"])
    assert actions(run) == ["workflow_started"] + ["workflow_step_completed"] * 2
    assert [status for _, status, _, _ in units(run)] == ["done", "done", "running"]
    assert run.snapshots.count() == 3
