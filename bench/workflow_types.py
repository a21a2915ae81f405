"""The per-step benchmark's workflow and baseline task, registered in the benchmark's web process and workers:
a chain of ten trivial steps, and the bare Celery task it is measured against."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from workflows.engine import Step, StepContext, WorkflowType, workflow_type_register


def noop(context: StepContext) -> dict[str, Any]:
    return context.data


# Ten trivial steps in a row: their wall time over N bare Celery round trips is the engine's per-step cost.
workflow_type_register(
    WorkflowType(
        name="bench_chain",
        steps=tuple(Step(name=f"step_{index}", run=noop) for index in range(10)),
        description="Benchmark: ten trivial steps.",
    )
)


@shared_task(name="bench.echo")
def echo(value: int) -> int:
    """The bare Celery round trip the engine's per-step cost is measured against."""
    return value
