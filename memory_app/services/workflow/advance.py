"""A plain step recorded and the next one begun in ONE statement (PostgreSQL): what ``workflow_unit_complete``,
``workflow_step_complete`` and the next unit's INSERT write in a transaction of ten statements, written by one
statement of data-modifying CTEs. Outside a transaction that statement is its own transaction: one round trip and
one commit per step, every record the step commits otherwise still committed (the unit done, the snapshot, the
run, the live event, the history record and its index row, the next step's unit).

Outside a transaction the statement is a prepared statement of the connection (``memory_app.prepared``):
PostgreSQL took longer to plan its CTEs than to run them, and its text is the same for every step of a shape.

The statement locks the run's row first (``FOR UPDATE``, as ``workflow_lock_running`` does, so it queues with a
cancel or a restore the same way) and writes only if the run is still in progress on the unit's step key and the
unit is still held by the caller's claim; otherwise it writes nothing and the step is stale.

Only the common moves take this path (the engine decides): a plain step, not paused after, whose next step is a
plain step, or that is the run's last (the run completes). Pauses, fan-outs and SQLite go through
``workflow_step_complete``.
"""

# The statement is built from names in the models' metadata; every value in it is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import functools
import uuid
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
from memory_app.prepared import PreparedStatementLost, execute_prepared, prepared_supported
from memory_app.services.events import event_build, event_wake_on_commit
from memory_app.services.history import history_record_build
from memory_app.services.search import history_entry_build
from memory_app.services.search_vectors import search_embed_enqueue
from memory_app.services.webhooks import webhook_dispatch
from memory_app.services.workflow.runs import (
    _describe_step,
    _lock,
    clean_data,
    workflow_progress,
    workflow_snapshots_trim,
)
from memory_app.services.workflow.transitions import _run_payload


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
    next_unit: WorkflowUnit | None,
) -> bool:
    """Mark ``unit`` (the run's one unit of its current plain step, held by its claim token) done with ``result``,
    save ``data`` as the step's output with its snapshot, event and history record, and move the run to its next
    step under ``next_unit.step_key``, inserting ``next_unit`` (built by the engine, unsaved: claimed by a continuing
    worker, or pending for a message), all in one statement. ``next_unit`` None: the step is the run's last, and the
    run completes as ``workflow_step_complete`` completes it (its ``completed`` snapshot, event and record with
    them, then the ``workflow.completed`` webhook): call that inside the transaction the caller commits it in.

    False, with nothing written, when the work is stale (the run is no longer in progress on the unit's step key,
    or the unit's claim is gone). ``workflow`` (as the caller holds it: ``project`` and ``owner`` loaded) is updated
    in place as ``workflow_step_complete`` updates it; ``next_unit`` gets its key. Call on PostgreSQL only
    (``workflow_step_advance_supported``), outside a transaction or in one with no savepoint to protect.
    """
    finished_step = workflow.current_step
    next_index = workflow.step_index + 1
    completes = next_unit is None
    if workflow.status != WorkflowStatus.IN_PROGRESS or completes != (next_index >= len(workflow.steps)):
        raise ValueError("workflow_step_advance moves an in-progress run to its next step, or completes it")
    now = timezone.now()
    data = clean_data(data)
    entries = clean_data({"e": list(compression_entries)})["e"]
    progress = workflow_progress(
        steps=workflow.steps, step_index=next_index, description=_describe_step(workflow.steps, next_index)
    )
    status = WorkflowStatus.COMPLETED if completes else WorkflowStatus.IN_PROGRESS
    next_step = "" if next_unit is None else workflow.steps[next_index]
    step_key = uuid.uuid4() if next_unit is None else next_unit.step_key
    # What the run becomes, as ``workflow_step_complete`` writes it: its events and snapshots describe it.
    after = {"status": str(status), "current_step": next_step, "step_index": next_index, "progress": progress}
    snapshots = [
        WorkflowSnapshot(
            workflow=workflow,
            sequence=0,  # set by the statement: the run's last + 1, + 2
            event=event.value,
            step=finished_step,
            step_index=next_index,
            status=status,
            data=data,
            progress=progress,
            error=None,
        )
        for event in (
            [SnapshotEvent.STEP_COMPLETED, SnapshotEvent.COMPLETED] if completes else [SnapshotEvent.STEP_COMPLETED]
        )
    ]
    events = [
        event_build(
            kind=EventKind.STEP_COMPLETED,
            project=workflow.project,
            workflow=workflow,
            data={"workflow_id": str(workflow.pk), **after, "step": finished_step},
        )
    ]
    records = [
        history_record_build(
            project=workflow.project,
            action=HistoryAction.WORKFLOW_STEP_COMPLETED,
            user=workflow.owner,
            workflow_id=workflow.pk,
            summary=f"Workflow step {finished_step} completed.",
            details={"step": finished_step, "step_index": next_index - 1},
        )
    ]
    if completes:
        events.append(
            event_build(
                kind=EventKind.WORKFLOW_COMPLETED,
                project=workflow.project,
                workflow=workflow,
                data={"workflow_id": str(workflow.pk), **after},
            )
        )
        records.append(
            history_record_build(
                project=workflow.project,
                action=HistoryAction.WORKFLOW_COMPLETED,
                user=workflow.owner,
                workflow_id=workflow.pk,
                details={"workflow_type": workflow.workflow_type, "steps": len(workflow.steps)},
            )
        )
    index_rows = [history_entry_build(record, owner_id=workflow.project.owner_id) for record in records]

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
    head = f"snapshot{len(snapshots) - 1}"
    # The run's row is locked first (every other CTE reads ``done``, which reads ``run``), as every writer of a run
    # locks it first: a cancel or restore waiting for it, or holding it, is ordered against this step, never
    # deadlocked with it. The snapshots' sequences follow the run's last (the run's lock orders appends).
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
    }
    for number, snapshot in enumerate(snapshots):
        parent = "(SELECT head_id FROM run)" if number == 0 else f"(SELECT id FROM snapshot{number - 1})"
        ctes[f"snapshot{number}"] = insert(
            snapshot,
            computed={"sequence": f"tally.last + {number + 1}", "parent_id": parent},
            source=f"FROM tally {after_done}",
        )
    ctes["advanced"] = (
        f"UPDATE {run_table} SET error = NULL, stuck_since = NULL, head_id = (SELECT id FROM {head}), "
        f"compression_history = compression_history || {value(WorkflowState, 'compression_history', entries)}, "
        + assign(
            WorkflowState,
            {
                "data": data,
                "status": status,
                "step_index": next_index,
                "current_step": next_step,
                "step_key": step_key,
                "progress": progress,
                "updated_at": now,
            },
        )
        + f" WHERE workflow_id = {value(WorkflowState, 'workflow_id', workflow.pk)} "
        f"AND EXISTS (SELECT 1 FROM {head}) RETURNING 1"
    )
    for number, (event, record, index_row) in enumerate(zip(events, records, index_rows, strict=True)):
        # Each event and record after the one before it (their ids are their order: a stream reads events by id).
        after_previous = after_done if number == 0 else f"WHERE EXISTS (SELECT 1 FROM event{number - 1})"
        ctes[f"event{number}"] = insert(event, computed={}, source=after_previous)
        after_previous = after_done if number == 0 else f"WHERE EXISTS (SELECT 1 FROM record{number - 1})"
        ctes[f"record{number}"] = insert(record, computed={}, source=after_previous)
        ctes[f"indexed{number}"] = insert(
            index_row, computed={"history_id": f"record{number}.id"}, source=f"FROM record{number}"
        )
    if next_unit is not None:
        ctes["unit"] = insert(next_unit, computed={}, source=after_done)
    # ``done`` is read first: the first CTE to run takes the run's lock.
    returned = ["done", head, "tally", "advanced", *(f"indexed{number}" for number in range(len(records)))]
    returned += ["unit"] if next_unit is not None else []
    columns = {"tally": "count", "advanced": "count(*)"}
    sql = (
        "WITH "
        + ", ".join(f"{name} AS ({body})" for name, body in ctes.items())
        + " SELECT "
        + ", ".join(f"(SELECT {columns.get(name, 'id')} FROM {name})" for name in returned)
    )
    with connection.cursor() as cursor:
        if connection.get_autocommit() and prepared_supported():
            # Its own transaction: prepared once per connection (PostgreSQL planned its CTEs for longer than it
            # ran them). A session that lost the statement ran nothing: it is sent as it is this time (a pooler may
            # give each query another session), and the next step prepares it again.
            try:
                execute_prepared(cursor, [("step_advance", sql, params)])
            except PreparedStatementLost:
                cursor.execute(sql, params)
        else:
            cursor.execute(sql, params)
        row = dict(zip(returned, cursor.fetchone(), strict=True))
    if row["done"] is None:
        return False
    if row["advanced"] != 1:
        # The statement locked the run on this step key, so it cannot have missed it.
        raise RuntimeError(f"workflow {workflow.pk}: the step was recorded but the run did not advance")
    # As ``_compare_and_set`` leaves the run it wrote.
    workflow.data = data
    workflow.status = status
    workflow.step_index = next_index
    workflow.current_step = next_step
    workflow.step_key = step_key
    workflow.progress = progress
    workflow.error = None
    workflow.compression_history = [*workflow.compression_history, *entries]
    workflow.head_id = row[head]
    workflow.updated_at = now
    workflow.stuck_since = None
    if next_unit is not None:
        next_unit.pk = row["unit"]
        next_unit._state.adding = False
    event_wake_on_commit(project_key=str(workflow.project_id))
    search_embed_enqueue([row[f"indexed{number}"] for number in range(len(records))])
    if row["tally"] + len(snapshots) > settings.MEMORY.workflow.max_state_history:
        # The run holds more snapshots than kept: trim as ``workflow_step_complete`` does, under the run's lock.
        with transaction.atomic():
            workflow_snapshots_trim(workflow=_lock(workflow))
    if completes:
        webhook_dispatch(event="workflow.completed", project=workflow.project, payload=_run_payload(workflow))
    return True
