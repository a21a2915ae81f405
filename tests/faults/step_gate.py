"""Wraps the real pipelines' step functions in a worker that a fault test starts (WORKFLOW_MODULES).

Every execution of a step function is logged, one line per call, to ``$COMICMEM_FAULT_DIR/calls.log`` (the
provider calls of the step). When ``$COMICMEM_FAULT_PAUSE_STEP`` names a step, the wrapper writes the unit's
index to ``$COMICMEM_FAULT_DIR/running-<step>`` as the step starts and then holds it, so the test can kill the
worker in the middle of that step.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from workflows.engine import StepContext, workflow_type_register, workflow_types

PIPELINES = ("text_compression", "comic_generation")
HOLD_SECONDS = 300.0


def _wrap(run: Any) -> Any:
    def wrapped(context: StepContext) -> Any:
        folder = Path(os.environ["COMICMEM_FAULT_DIR"])
        with (folder / "calls.log").open("a") as log:
            log.write(f"{context.workflow_id} {context.step} {context.unit_index} {os.getpid()}\n")
        if os.environ.get("COMICMEM_FAULT_PAUSE_STEP") == context.step:
            (folder / f"running-{context.step}").write_text(str(context.unit_index))
            deadline = time.monotonic() + HOLD_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.2)
        return run(context)

    return wrapped


def install() -> None:
    if not os.environ.get("COMICMEM_FAULT_DIR"):
        return
    registered = workflow_types()
    for name in PIPELINES:
        workflow_type = registered[name]
        steps = tuple(dataclasses.replace(step, run=_wrap(step.run)) for step in workflow_type.steps)
        workflow_type_register(dataclasses.replace(workflow_type, steps=steps))


install()
