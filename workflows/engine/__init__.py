"""The workflow engine: registered workflow types, the unit runner, fan-out, retries, dispatch and recovery.

A workflow type is an ordered list of steps. A ``Step`` is a function of the state data that returns the new
data; a ``FanOutStep`` runs one unit per item (a segment) and merges the units' results into the data. Each
unit is a ``WorkflowUnit`` row: a task claims it under a lease, runs the step function outside any transaction,
then in ONE transaction (with the run's row locked) marks it done by compare-and-set, applies the step's
``commit`` effects, and — when the database says no unit of the step is left — saves the data, the progress,
the snapshot and the ``workflow_step_completed`` record and creates the next step's units. Messages are sent
only after that commits; a next step that is a plain step is instead created claimed by the worker that recorded
the previous one, which runs it without a message (continuation, bounded by ``workflow.max_continued_steps`` and
``max_continued_seconds``). On PostgreSQL a worker delivered a fan-out unit runs more of the step's units in two
lanes that take turns at the provider (``lanes``, ``workflow.fan_out_lanes``). Lost or repeated messages are
harmless: a done unit is never claimed again, and recovery re-enqueues units whose lease expired.

One module per concern, lowest first: ``retries`` (which errors are transient, backoff), ``steps`` (the types,
steps and their registry), ``units`` (claims, leases, the heartbeat), ``dispatch`` (the one sender of
``workflows.run_unit`` messages; begin, finish and continue a step), ``lanes`` (the process's second lane for a
fan-out), ``runner`` (``unit_execute``: run a unit,
record its result or its failure), ``recovery`` (expired leases, stuck runs), ``redirect`` (pauses, the cache
policy, data patches, continue, redraw), ``operations`` (start, resume, restore, cancel). Callers import from the
package.
"""

from __future__ import annotations

from workflows.engine.dispatch import revoke, unit_task_register
from workflows.engine.operations import (
    EngineOperations,
    workflow_cancel,
    workflow_restore,
    workflow_resume,
    workflow_start,
)
from workflows.engine.recovery import (
    recovery_countdown,
    workflow_recover,
    workflow_stuck_flag,
    workflow_stuck_handle,
    workflow_stuck_release,
)
from workflows.engine.redirect import (
    merge_patch,
    run_preferences_check,
    workflow_continue_run,
    workflow_redraw,
)
from workflows.engine.retries import (
    DATABASE_CONNECTION_ERRORS,
    RetryableStepError,
    database_connection_reset,
    is_retryable,
    max_countdown,
    retry_delay,
)
from workflows.engine.runner import FAILURE_RECORD_PAUSES, unit_execute
from workflows.engine.steps import (
    CACHE_POLICY,
    COMPRESSION_HISTORY_KEY,
    FanOutStep,
    Redraw,
    RedrawRequest,
    StartRequest,
    Step,
    StepContext,
    WorkflowType,
    workflow_type_get,
    workflow_type_register,
    workflow_types,
)
from workflows.engine.units import LeaseHeartbeat, lease_owner_name

__all__ = [
    "CACHE_POLICY",
    "COMPRESSION_HISTORY_KEY",
    "DATABASE_CONNECTION_ERRORS",
    "FAILURE_RECORD_PAUSES",
    "EngineOperations",
    "FanOutStep",
    "LeaseHeartbeat",
    "Redraw",
    "RedrawRequest",
    "RetryableStepError",
    "StartRequest",
    "Step",
    "StepContext",
    "WorkflowType",
    "database_connection_reset",
    "is_retryable",
    "lease_owner_name",
    "max_countdown",
    "merge_patch",
    "recovery_countdown",
    "retry_delay",
    "revoke",
    "run_preferences_check",
    "unit_execute",
    "unit_task_register",
    "workflow_cancel",
    "workflow_continue_run",
    "workflow_recover",
    "workflow_redraw",
    "workflow_restore",
    "workflow_resume",
    "workflow_start",
    "workflow_stuck_flag",
    "workflow_stuck_handle",
    "workflow_stuck_release",
    "workflow_type_get",
    "workflow_type_register",
    "workflow_types",
]
