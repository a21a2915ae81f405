"""Small pipelines that exercise the engine. Imported through settings.WORKFLOW_MODULES (test settings), so a
real worker started by a test registers them too.

Every step records its effect in ``workflow_test_effects`` from its ``commit`` function, i.e. in the transaction
that marks the unit done: a row per execution that counted. Faults are injected through the input data.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.db import connection

from memory_app.providers.turns import provider_turn_end
from workflows.engine import (
    FanOutStep,
    Redraw,
    RedrawRequest,
    RetryableStepError,
    Step,
    StepContext,
    WorkflowType,
    workflow_type_register,
)

EFFECTS_TABLE = "workflow_test_effects"


def effects_table_create() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} (effect_key VARCHAR(300) NOT NULL, pid INTEGER)")
        cursor.execute(f"DELETE FROM {EFFECTS_TABLE}")  # noqa: S608 - a constant table name


def effects(workflow_id: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT effect_key FROM {EFFECTS_TABLE} WHERE effect_key LIKE %s ORDER BY effect_key",  # noqa: S608
            [f"{workflow_id}:%"],
        )
        return [row[0] for row in cursor.fetchall()]


def record_effect(context: StepContext, result: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {EFFECTS_TABLE} (effect_key, pid) VALUES (%s, %s)",  # noqa: S608
            [f"{context.workflow_id}:{context.step}:{context.unit_index}", os.getpid()],
        )


def _faults(context: StepContext) -> None:
    """Injected faults: a slow step, transient errors for the first attempts, a failure while a file exists."""
    faults = context.data.get("faults", {}).get(context.step, {})
    if faults.get("answer_first"):
        # As a provider whose answer is in: a second lane of the process may begin its unit (fan-out lanes).
        provider_turn_end()
    time.sleep(float(faults.get("sleep", 0)))
    if context.attempt <= int(faults.get("transient", 0)):
        raise RetryableStepError(f"injected transient error, attempt {context.attempt}")
    hold = faults.get("hold_while_exists")
    if hold:
        # Tell the test the step is running (its unit claimed and committed), then hold it while the flag exists.
        Path(f"{hold}.running").touch()
        while Path(hold).exists():
            time.sleep(0.05)
    flag = faults.get("fail_while_exists")
    if flag and Path(flag).exists() and context.unit_index in faults.get("units", [0]):
        time.sleep(float(faults.get("fail_after", 0)))
        raise ValueError(f"injected failure of unit {context.unit_index}")


def measure(context: StepContext) -> dict[str, Any]:
    _faults(context)
    return {**context.data, "length": len(context.data["text"])}


def shout(context: StepContext) -> dict[str, Any]:
    _faults(context)
    return {**context.data, "text": context.data["text"].upper()}


def count_words(context: StepContext) -> dict[str, Any]:
    _faults(context)
    return {**context.data, "words": len(context.data["text"].split())}


def split(context: StepContext) -> dict[str, Any]:
    _faults(context)
    return {**context.data, "segments": context.data["text"].split()}


def render_segment(context: StepContext) -> str:
    _faults(context)
    return f"<{context.item}>"


def merge_pages(data: dict[str, Any], results: list[Any]) -> dict[str, Any]:
    return {**data, "pages": results}


def bind(context: StepContext) -> dict[str, Any]:
    _faults(context)
    return {**context.data, "book": "".join(context.data["pages"])}


THREE_STEPS = workflow_type_register(
    WorkflowType(
        name="three_steps",
        steps=(
            Step("measure", measure, commit=record_effect),
            Step("shout", shout, commit=record_effect),
            Step("count_words", count_words, commit=record_effect),
        ),
    )
)


def redraw_edit(data: dict[str, Any], request: RedrawRequest) -> dict[str, Any]:
    segments = list(data["segments"])
    segments[request.index] = f"{segments[request.index]}{request.prompt_extra or '*'}"
    return {**{key: value for key, value in data.items() if key not in ("pages", "book")}, "segments": segments}


FAN_OUT = workflow_type_register(
    WorkflowType(
        name="fan_out",
        # A page is redrawn from its segment with a mark; the other pages are carried over as they are.
        redraw=Redraw(
            step="render",
            results=lambda data: data.get("pages") if "book" in data else None,
            edit=redraw_edit,
            carry=lambda result, project_id, workflow_id: result,
        ),
        steps=(
            Step("split", split, commit=record_effect),
            FanOutStep(
                "render",
                items=lambda data: data["segments"],
                run=render_segment,
                merge=merge_pages,
                commit=record_effect,
            ),
            Step("bind", bind, commit=record_effect),
        ),
    )
)


def tick(context: StepContext) -> dict[str, Any]:
    _faults(context)
    return {**context.data, "ticks": [*context.data.get("ticks", []), context.step]}


# Ten plain steps in a row: a worker continues from one to the next without a message through the broker.
TEN_STEPS = workflow_type_register(
    WorkflowType(
        name="ten_steps",
        steps=tuple(Step(f"tick{index}", tick, commit=record_effect) for index in range(10)),
    )
)


def tick_compressing(context: StepContext) -> dict[str, Any]:
    """``tick``, with a ``compression_history`` entry for the run and a secret the engine must redact."""
    data = tick(context)
    entry = {"step": context.step, "input_size": 10, "output_size": 5, "compression_ratio": 0.5}
    return {**data, "api_key": "sk-secret", "_compression_history": [entry]}


# Four plain steps without effects, the first two adding compression entries: what the engine records for steps
# that write nothing of their own (the continued step's statements, both ways of recording it side by side).
workflow_type_register(
    WorkflowType(
        name="plain_steps",
        steps=(
            Step("plain0", tick_compressing),
            Step("plain1", tick_compressing),
            Step("plain2", tick),
            Step("plain3", tick),
        ),
    )
)
