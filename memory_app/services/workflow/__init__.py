"""Workflow state (seed §5): create, compare-and-set transitions, snapshots and their trimming, restore, units.

These services know nothing of steps or Celery (``workflows.engine`` drives them, and owns the units' claims and
leases: ``workflows/engine/units.py``); they keep the run's truth in the database so any worker, after any crash,
can tell what is done and what is not.

Snapshot trimming (``workflow.max_state_history`` / ``keep_state_history``, §5.2): when a run holds more than
``max_state_history`` snapshots, every snapshot is deleted except
  1. the newest ``keep_state_history`` by sequence, and
  2. every ancestor of the run's head (the current branch, back to its first snapshot),
because (2) is what a resume continues from and what ``restore`` of the current branch points at. Only
snapshots of abandoned branches, older than the newest ``keep_state_history``, are ever deleted; a kept
snapshot whose parent was deleted has ``parent = null``.

The package, one module per concern, lowest first: ``runs`` (progress, snapshots, creation), ``queue`` (the
per-user queue), ``transitions`` (step completed, fail, resume, restore, cancel, and ending the run's units those
take with them), ``advance`` (a plain step recorded and the next begun in one statement), ``redirect`` (continue
after a pause, forks that redraw a panel), ``operations`` (the engine's operations the admin calls). Callers import
from the package.
"""

from __future__ import annotations

from memory_app.services.workflow.advance import workflow_step_advance, workflow_step_advance_supported
from memory_app.services.workflow.operations import (
    WorkflowOperations,
    workflow_operations,
    workflow_operations_register,
)
from memory_app.services.workflow.queue import (
    workflow_active_admit,
    workflow_queue_admit,
    workflow_queue_owners,
    workflow_queue_start,
)
from memory_app.services.workflow.redirect import (
    workflow_continue,
    workflow_fork_create,
    workflow_fork_find,
    workflow_source_lock,
)
from memory_app.services.workflow.runs import (
    QUEUED_DESCRIPTION,
    Segments,
    clean_data,
    workflow_create,
    workflow_lineage_ids,
    workflow_progress,
    workflow_snapshot_append,
    workflow_snapshots_trim,
)
from memory_app.services.workflow.transitions import (
    Edit,
    workflow_cancel,
    workflow_fail,
    workflow_fan_out_progress,
    workflow_lock_running,
    workflow_restore,
    workflow_resume,
    workflow_snapshot_at,
    workflow_step_complete,
    workflow_units_end,
)

__all__ = [
    "QUEUED_DESCRIPTION",
    "Edit",
    "Segments",
    "WorkflowOperations",
    "clean_data",
    "workflow_active_admit",
    "workflow_cancel",
    "workflow_continue",
    "workflow_create",
    "workflow_fail",
    "workflow_fan_out_progress",
    "workflow_fork_create",
    "workflow_fork_find",
    "workflow_lineage_ids",
    "workflow_lock_running",
    "workflow_operations",
    "workflow_operations_register",
    "workflow_progress",
    "workflow_queue_admit",
    "workflow_queue_owners",
    "workflow_queue_start",
    "workflow_restore",
    "workflow_resume",
    "workflow_snapshot_append",
    "workflow_snapshot_at",
    "workflow_snapshots_trim",
    "workflow_source_lock",
    "workflow_step_advance",
    "workflow_step_advance_supported",
    "workflow_step_complete",
    "workflow_units_end",
]
