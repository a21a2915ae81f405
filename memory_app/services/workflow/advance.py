"""A plain step recorded and the next one begun in ONE statement (PostgreSQL): what ``workflow_unit_complete``,
``workflow_step_complete`` and the next unit's INSERT write in a transaction of ten statements, written by one
statement of data-modifying CTEs. Outside a transaction that statement is its own transaction: one round trip and
one commit per step, every record the step commits otherwise still committed (the unit done, the snapshot, the
run, the live event, the history record and its index row, the next step's unit).

The statement locks the run's row first (``FOR UPDATE``, as ``workflow_lock_running`` does, so it queues with a
cancel or a restore the same way) and writes only if the run is still in progress on the unit's step key and the
unit is still held by the caller's claim; otherwise it writes nothing and the step is stale.

Only the common move takes this path (the engine decides): a plain step, neither the last nor paused after, whose
next step is a plain step. Completion, pauses, fan-outs and SQLite go through ``workflow_step_complete``.
"""

# The statement is built from names in the models' metadata; every value in it is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Field, Model
from django.utils import timezone

from memory_app.models import (
    EventKind,
    HistoryAction,
    SnapshotEvent,
    UnitStatus,
    WorkflowSnapshot,
    WorkflowState,
    WorkflowStatus,
    WorkflowUnit,
)
from memory_app.services.events import event_build, event_wake_on_commit
from memory_app.services.history import history_record_build
from memory_app.services.search import history_entry_build
from memory_app.services.search_vectors import search_embed_enqueue
from memory_app.services.workflow.runs import (
    _describe_step,
    _lock,
    clean_data,
    workflow_progress,
    workflow_snapshots_trim,
)


@functools.cache
def _column(model: type[Model], name: str) -> tuple[Field[Any, Any], str]:
    """A model's field by name and its column's type on this process's database."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field):
        raise TypeError(f"{model.__name__}.{name} is not a column")
    return field, str(field.db_type(connection))


def workflow_step_advance_supported() -> bool:
    """Whether this database runs the one-statement advance (data-modifying CTEs: PostgreSQL)."""
    return connection.vendor == "postgresql"


def workflow_step_advance(
    *,
    workflow: WorkflowState,
    unit: WorkflowUnit,
    result: dict[str, Any],
    data: dict[str, Any],
    compression_entries: Sequence[dict[str, Any]],
    next_unit: WorkflowUnit,
) -> bool:
    """Mark ``unit`` (the run's one unit of its current plain step, held by its claim token) done with ``result``,
    save ``data`` as the step's output with its snapshot, event and history record, move the run to its next step
    under ``next_unit.step_key``, and insert ``next_unit`` (built by the engine, unsaved: claimed by a continuing
    worker, or pending for a message), all in one statement. False, with nothing written, when the work is stale
    (the run is no longer in progress on the unit's step key, or the unit's claim is gone).

    ``workflow`` (as the caller holds it: ``project`` and ``owner`` loaded) is updated in place as
    ``workflow_step_complete`` updates it; ``next_unit`` gets its key. Call on PostgreSQL only
    (``workflow_step_advance_supported``), outside a transaction or in one with no savepoint to protect.
    """
    finished_step = workflow.current_step
    next_index = workflow.step_index + 1
    if next_index >= len(workflow.steps) or workflow.status != WorkflowStatus.IN_PROGRESS:
        raise ValueError("workflow_step_advance moves an in-progress run to a next step; use workflow_step_complete")
    now = timezone.now()
    data = clean_data(data)
    entries = clean_data({"e": list(compression_entries)})["e"]
    progress = workflow_progress(
        steps=workflow.steps, step_index=next_index, description=_describe_step(workflow.steps, next_index)
    )
    next_step = workflow.steps[next_index]
    step_key = next_unit.step_key
    # What the run becomes, as ``workflow_step_complete`` writes it: its event and snapshot describe it.
    after = {
        "status": str(WorkflowStatus.IN_PROGRESS),
        "current_step": next_step,
        "step_index": next_index,
        "progress": progress,
    }
    snapshot = WorkflowSnapshot(
        workflow=workflow,
        sequence=0,  # set by the statement: the run's last + 1
        event=SnapshotEvent.STEP_COMPLETED.value,
        step=finished_step,
        step_index=next_index,
        status=WorkflowStatus.IN_PROGRESS,
        data=data,
        progress=progress,
        error=None,
    )
    event = event_build(
        kind=EventKind.STEP_COMPLETED,
        project=workflow.project,
        workflow=workflow,
        data={"workflow_id": str(workflow.pk), **after, "step": finished_step},
    )
    record = history_record_build(
        project=workflow.project,
        action=HistoryAction.WORKFLOW_STEP_COMPLETED,
        user=workflow.owner,
        workflow_id=workflow.pk,
        summary=f"Workflow step {finished_step} completed.",
        details={"step": finished_step, "step_index": next_index - 1},
    )
    index_row = history_entry_build(record, owner_id=workflow.project.owner_id)

    # Names come from the models' metadata, every value is a parameter.
    quote = connection.ops.quote_name
    run_table, unit_table = quote(WorkflowState._meta.db_table), quote(WorkflowUnit._meta.db_table)
    snapshot_table = quote(WorkflowSnapshot._meta.db_table)
    params: list[Any] = []

    def value(model: type[Model], name: str, raw: Any) -> str:
        """A placeholder for ``raw`` as the column ``name`` of ``model`` stores it, cast to the column's type."""
        field, column_type = _column(model, name)
        params.append(field.get_db_prep_save(raw, connection))
        return f"CAST(%s AS {column_type})"

    def assign(model: type[Model], values: dict[str, Any]) -> str:
        return ", ".join(f"{quote(name)} = {value(model, name, raw)}" for name, raw in values.items())

    def insert(instance: Model, *, computed: dict[str, str], source: str) -> str:
        """INSERT … SELECT of an unsaved instance's fields (``computed``: SQL for some columns), RETURNING id."""
        columns, values = [], []
        for field in instance._meta.concrete_fields:
            if field.primary_key or field.column is None:
                continue
            columns.append(quote(field.column))
            if field.column in computed:
                values.append(computed[field.column])
            else:
                values.append(value(type(instance), field.name, field.pre_save(instance, True)))
        return (
            f"INSERT INTO {quote(instance._meta.db_table)} ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} {source} RETURNING id"
        )

    after_done = "WHERE EXISTS (SELECT 1 FROM done)"
    # The run's row is locked first (every other CTE reads ``done``, which reads ``run``), as every writer of a run
    # locks it first: a cancel or restore waiting for it, or holding it, is ordered against this step, never
    # deadlocked with it. The snapshot sequence is the run's last + 1 (the run's lock orders appends).
    ctes = {
        "run": (
            f"SELECT head_id FROM {run_table} WHERE workflow_id = {value(WorkflowState, 'workflow_id', workflow.pk)} "
            f"AND status = {value(WorkflowState, 'status', WorkflowStatus.IN_PROGRESS)} "
            f"AND step_key = {value(WorkflowState, 'step_key', unit.step_key)} FOR UPDATE"
        ),
        "done": (
            f"UPDATE {unit_table} SET error = NULL, "
            + assign(
                WorkflowUnit,
                {"status": UnitStatus.DONE, "result": clean_data({"value": result})["value"], "updated_at": now},
            )
            + f" WHERE id = {value(WorkflowUnit, 'id', unit.pk)} "
            f"AND status = {value(WorkflowUnit, 'status', UnitStatus.RUNNING)} "
            f"AND claim_token = {value(WorkflowUnit, 'claim_token', unit.claim_token)} "
            "AND EXISTS (SELECT 1 FROM run) RETURNING id"
        ),
        "tally": (
            "SELECT COALESCE(MAX(sequence), 0) AS last, COUNT(*) AS count "
            f"FROM {snapshot_table} WHERE workflow_id = {value(WorkflowSnapshot, 'workflow', workflow.pk)}"
        ),
        "snapshot": insert(
            snapshot,
            computed={"sequence": "tally.last + 1", "parent_id": "(SELECT head_id FROM run)"},
            source=f"FROM tally {after_done}",
        ),
        "advanced": (
            f"UPDATE {run_table} SET error = NULL, stuck_since = NULL, head_id = (SELECT id FROM snapshot), "
            "compression_history = compression_history || "
            f"{value(WorkflowState, 'compression_history', entries)}, "
            + assign(
                WorkflowState,
                {
                    "data": data,
                    "step_index": next_index,
                    "current_step": next_step,
                    "step_key": step_key,
                    "progress": progress,
                    "updated_at": now,
                },
            )
            + f" WHERE workflow_id = {value(WorkflowState, 'workflow_id', workflow.pk)} "
            "AND EXISTS (SELECT 1 FROM snapshot) RETURNING 1"
        ),
        "event": insert(event, computed={}, source=after_done),
        "record": insert(record, computed={}, source=after_done),
        "indexed": insert(index_row, computed={"history_id": "record.id"}, source="FROM record"),
        "unit": insert(next_unit, computed={}, source=after_done),
    }
    # ``done`` is read first: the first CTE to run takes the run's lock.
    sql = (
        "WITH "
        + ", ".join(f"{name} AS ({body})" for name, body in ctes.items())
        + " SELECT (SELECT id FROM done), (SELECT id FROM snapshot), (SELECT count FROM tally),"
        " (SELECT id FROM record), (SELECT id FROM indexed), (SELECT id FROM event), (SELECT id FROM unit),"
        " (SELECT count(*) FROM advanced)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    done_id, snapshot_id, snapshot_count, record_id, index_id, event_id, unit_id, advanced = row
    if done_id is None:
        return False
    if advanced != 1:
        # The statement locked the run on this step key, so it cannot have missed it.
        raise RuntimeError(f"workflow {workflow.pk}: the step was recorded but the run did not advance")
    # As ``_compare_and_set`` leaves the run it wrote.
    workflow.data = data
    workflow.step_index = next_index
    workflow.current_step = next_step
    workflow.step_key = step_key
    workflow.progress = progress
    workflow.error = None
    workflow.compression_history = [*workflow.compression_history, *entries]
    workflow.head_id = snapshot_id
    workflow.updated_at = now
    workflow.stuck_since = None
    record.pk, event.pk, index_row.pk = record_id, event_id, index_id
    next_unit.pk = unit_id
    next_unit._state.adding = False
    event_wake_on_commit(project_key=str(workflow.project_id))
    search_embed_enqueue([index_id])
    if snapshot_count + 1 > settings.MEMORY.workflow.max_state_history:
        # The run holds more snapshots than kept: trim as ``workflow_step_complete`` does, under the run's lock.
        with transaction.atomic():
            workflow_snapshots_trim(workflow=_lock(workflow))
    return True
