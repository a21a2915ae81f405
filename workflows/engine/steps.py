"""What a workflow type is made of: its steps, what a step function sees, and the registry of types."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, User

from memory_app.errors import ValidationFailed
from memory_app.models import Project

# A step may return this key in its data: a list of ``compression_history`` entries ({step, timestamp,
# input_size, output_size, compression_ratio}) that the engine appends to the run's ``compression_history`` in
# the transaction that records the step, and removes from the data. So a redone step never appends twice.
COMPRESSION_HISTORY_KEY = "_compression_history"


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
class WorkflowType:
    name: str
    steps: tuple[Step | FanOutStep, ...] = field(default_factory=tuple)
    description: str = ""
    prepare: Callable[[StartRequest], tuple[dict[str, Any], dict[str, Any]]] | None = None

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
