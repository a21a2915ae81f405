"""What the admin needs from the engine, registered by ``workflows`` at start-up so this package never imports it."""

from __future__ import annotations

from typing import Any, Protocol

from django.contrib.auth.models import AbstractBaseUser

from memory_app.errors import Conflict
from memory_app.models import (
    WorkflowState,
)

# --- operations that dispatch work -------------------------------------------------------------------------


class WorkflowOperations(Protocol):
    """What the admin needs from the engine. ``workflows`` registers its engine at start-up (its AppConfig),
    so this package never imports ``workflows``."""

    def resume(self, *, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState: ...

    def restore(
        self,
        *,
        workflow: WorkflowState,
        index: int,
        rerun: bool,
        user: AbstractBaseUser | None,
        data_patch: dict[str, Any] | None = None,
        preferences: dict[str, Any] | None = None,
    ) -> WorkflowState: ...

    def continue_run(
        self, *, workflow: WorkflowState, user: AbstractBaseUser | None, data_patch: dict[str, Any] | None = None
    ) -> WorkflowState: ...

    def redraw(
        self,
        *,
        workflow: WorkflowState,
        panel: int,
        user: AbstractBaseUser | None,
        seed: int | None = None,
        prompt_extra: str = "",
    ) -> WorkflowState: ...

    def cancel(self, *, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState: ...


_operations: list[WorkflowOperations] = []


def workflow_operations_register(*, operations: WorkflowOperations) -> None:
    _operations[:] = [operations]


def workflow_operations() -> WorkflowOperations:
    if not _operations:
        raise Conflict("No workflow engine is installed in this process.")
    return _operations[0]
