"""A stand-in for the comic generation pipeline (not merged yet): a short step, a fan-out of N segments whose
image provider sleeps, then a short closing step. Registered in the benchmark's web process and workers."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from workflows.engine import FanOutStep, Step, StepContext, WorkflowType, workflow_type_register


def segment(context: StepContext) -> dict[str, Any]:
    count = int(context.data["segments"])
    return {**context.data, "items": [f"segment-{index}" for index in range(count)]}


def render(context: StepContext) -> str:
    time.sleep(float(context.data["image_seconds"]))
    return f"image of {context.item}"


def merge(data: dict[str, Any], results: list[Any]) -> dict[str, Any]:
    return {**data, "images": results}


def finish(context: StepContext) -> dict[str, Any]:
    return {**context.data, "done": True}


def noop(context: StepContext) -> dict[str, Any]:
    return context.data


workflow_type_register(
    WorkflowType(
        name="bench_comic_fanout",
        steps=(
            Step(name="text_segmentation", run=segment),
            FanOutStep(name="image_generation", items=lambda data: data["items"], run=render, merge=merge),
            Step(name="quality_control", run=finish),
        ),
        description="Benchmark stand-in for comic_generation: N segments rendered by a sleeping image provider.",
    )
)

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
