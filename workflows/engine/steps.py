"""What a workflow type is made of: its steps, what a step function sees, and the registry of types."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, User

from memory_app.errors import ValidationFailed
from memory_app.models import Project

# A step may return this key in its data: a list of ``compression_history`` entries ({step, timestamp,
# input_size, output_size, compression_ratio}) that the engine appends to the run's ``compression_history`` in
# the transaction that records the step, and removes from the data. So a redone step never appends twice.
COMPRESSION_HISTORY_KEY = "_compression_history"

# The cache policy (``use``, ``refresh``, ``bypass``) of the run whose step this thread runs: the runner sets it from
# ``preferences.cache`` around the step, and every generation call of the pipelines reads it.
CACHE_POLICY: ContextVar[str] = ContextVar("cache_policy", default="use")


@dataclass(frozen=True)
class StepContext:
    """What a step function sees. ``item`` and ``unit_index`` are set for a fan-out unit.

    ``project`` and ``owner`` are the run's, set for ``run`` and ``commit`` alike, so a step needs no query of its
    own for them: ``run`` gets them with the unit's claim, ``commit`` as read with the run's row lock.
    """

    workflow_id: str
    workflow_type: str
    project_id: str
    step: str
    data: dict[str, Any]
    preferences: dict[str, Any]
    attempt: int
    unit_index: int = 0
    item: Any = None
    project: Project | None = None
    owner: User | None = None


@dataclass(frozen=True)
class Step:
    """A plain step: ``run(context) -> new data``.

    ``commit(context, result)`` (optional) applies database effects in the transaction that records the step
    as done, so they happen exactly once.
    """

    name: str
    run: Callable[[StepContext], dict[str, Any]]
    commit: Callable[[StepContext, Any], None] | None = None


@dataclass(frozen=True)
class FanOutStep:
    """One unit per ``items(data)``; ``run(context)`` gets ``context.item``; ``merge(data, results)`` (results in
    item order) returns the new data once the last unit is done."""

    name: str
    items: Callable[[dict[str, Any]], list[Any]]
    run: Callable[[StepContext], Any]
    merge: Callable[[dict[str, Any], list[Any]], dict[str, Any]]
    commit: Callable[[StepContext, Any], None] | None = None


@dataclass(frozen=True)
class StartRequest:
    """What ``prepare`` sees when a run is asked for: it validates, and returns the data and preferences to
    store. Raising one of our errors refuses the run before anything is written or enqueued."""

    user: AbstractBaseUser
    project: Project
    data: dict[str, Any]
    preferences: dict[str, Any]


@dataclass(frozen=True)
class RedrawRequest:
    """One item of a fan-out to redo in a new run: its index (from 0) and what changes."""

    index: int
    seed: int | None
    prompt_extra: str


@dataclass(frozen=True)
class Redraw:
    """How a type redraws one item of its fan-out step ``step`` in a new run (a panel of a comic).

    ``results(data)``: the fan-out's merged results in the data of a run that went past it (None before);
    ``edit(data, request)``: the data the new run's fan-out starts from (the item changed, the later steps' output
    dropped); ``carry(result, project_id, workflow_id)``: another item's result for the new run, its files copied
    into the new run's own storage, unchanged (the same checksum).
    """

    step: str
    results: Callable[[dict[str, Any]], list[Any] | None]
    edit: Callable[[dict[str, Any], RedrawRequest], dict[str, Any]]
    carry: Callable[[Any, str, str], Any]


@dataclass(frozen=True)
class WorkflowType:
    """A pipeline. ``check_data`` refuses data of the wrong shape (an edit through a data patch) with
    InvalidDataPatch; ``check_preferences`` returns the type's preferences checked (and completed), refusing bad ones
    with ValidationFailed; ``redraw`` says how one item of its fan-out is redone in a new run."""

    name: str
    steps: tuple[Step | FanOutStep, ...] = field(default_factory=tuple)
    description: str = ""
    prepare: Callable[[StartRequest], tuple[dict[str, Any], dict[str, Any]]] | None = None
    check_data: Callable[[dict[str, Any]], None] | None = None
    check_preferences: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    redraw: Redraw | None = None

    @property
    def step_names(self) -> list[str]:
        return [step.name for step in self.steps]


_REGISTRY: dict[str, WorkflowType] = {}


def workflow_type_register(workflow_type: WorkflowType) -> WorkflowType:
    names = workflow_type.step_names
    if not names or len(set(names)) != len(names):
        raise ValueError(f"workflow type {workflow_type.name!r} needs steps with distinct names")
    _REGISTRY[workflow_type.name] = workflow_type
    return workflow_type


def workflow_types() -> dict[str, WorkflowType]:
    return dict(_REGISTRY)


def workflow_type_get(name: str) -> WorkflowType:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValidationFailed(
            f"Unknown workflow_type '{name}'.",
            details={"fields": {"workflow_type": [f"Must be one of: {', '.join(sorted(_REGISTRY)) or 'none'}."]}},
        ) from None
