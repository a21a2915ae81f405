"""What the staff page of one run shows: its panels and pages, its step timeline, its snapshot tree, its failure.

Everything here is paged or aggregated in the database, so a run with thousands of units or snapshots costs a few
queries, never one per row.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Max, Min, Q, Sum

from memory_app.models import UnitStatus, WorkflowSnapshot, WorkflowState, WorkflowStatus, WorkflowUnit

# A unit that took this many times the median of its step's units is marked slow.
SLOW_FACTOR = 2.0


@dataclass(frozen=True)
class Page:
    number: int
    count: int
    total: int
    offset: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.count


def page_of(*, total: int, size: int, requested: str | None, default_last: bool = False) -> Page:
    """The page ``requested`` (from 1) of ``total`` items, clamped to what exists; junk is the default page."""
    count = max(1, -(-total // size))
    try:
        number = int(requested) if requested else (count if default_last else 1)
    except ValueError:
        number = count if default_last else 1
    number = min(max(1, number), count)
    return Page(number=number, count=count, total=total, offset=(number - 1) * size)


# --- panels and pages -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thumbnail:
    """One picture of a run: a panel (with its seed, prompt and whether the images cache had it) or a page."""

    kind: str  # "panel" or "page"
    number: int  # from 1, as in panel_001.png
    file_name: str  # the name the run's file view takes; "" when nothing was drawn yet
    seed: int | None = None
    prompt: str = ""
    cached: bool | None = None
    workflow_id: str = ""
    caption: str = ""


def _file_name(name: object) -> str:
    return name.rsplit("/", 1)[-1] if isinstance(name, str) else ""


def run_panels(*, workflow: WorkflowState, offset: int, limit: int) -> list[Thumbnail]:
    """The run's panels ``offset .. offset+limit``: prompt and seed from the composed scene, file and cache hit from
    what was drawn (merged into ``rendered``, or while the fan-out runs, its finished units' results)."""
    data = workflow.data or {}
    panels = [panel for panel in data.get("panels") or [] if isinstance(panel, dict)]
    shown = panels[offset : offset + limit]
    if not shown:
        return []
    indexes = [panel["index"] for panel in shown if isinstance(panel.get("index"), int)]
    drawn = {item.get("index"): item for item in data.get("rendered") or [] if isinstance(item, dict)}
    if not drawn:
        # Only the few fields the page needs: a whole step's unit holds the step's data, which can be large.
        rows = (
            WorkflowUnit.objects.filter(
                workflow=workflow, step_key=workflow.step_key, status=UnitStatus.DONE, unit_index__in=indexes
            )
            .order_by()
            .values("unit_index", "result__name", "result__cached")
        )
        drawn = {row["unit_index"]: {"name": row["result__name"], "cached": row["result__cached"]} for row in rows}
    thumbnails = []
    for panel in shown:
        index = panel.get("index")
        item = drawn.get(index, {})
        number = index + 1 if isinstance(index, int) else 0
        cached = item.get("cached")
        thumbnails.append(
            Thumbnail(
                kind="panel",
                number=number,
                file_name=_file_name(item.get("name")),
                seed=panel.get("seed"),
                prompt=str(panel.get("prompt") or ""),
                cached=cached if isinstance(cached, bool) else None,
                workflow_id=str(workflow.pk),
                caption=str(panel.get("caption") or ""),
            )
        )
    return thumbnails


def run_panel_count(*, workflow: WorkflowState) -> int:
    return len([panel for panel in (workflow.data or {}).get("panels") or [] if isinstance(panel, dict)])


def run_pages(*, workflow: WorkflowState) -> list[Thumbnail]:
    pages = ((workflow.data or {}).get("outputs") or {}).get("pages") or []
    return [
        Thumbnail(kind="page", number=number, file_name=_file_name(name), workflow_id=str(workflow.pk))
        for number, name in enumerate(pages, start=1)
        if isinstance(name, str)
    ]


def run_file_sha256(*, workflow: WorkflowState, file_name: str) -> str | None:
    """The checksum the run recorded for one of its panels (pages carry none)."""
    for item in (workflow.data or {}).get("rendered") or []:
        if isinstance(item, dict) and _file_name(item.get("name")) == file_name:
            sha = item.get("sha256")
            return sha if isinstance(sha, str) else None
    return None


# --- the step timeline ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSpan:
    """One step as it ran (one per step key: a step run again after a restore or a resume is another bar)."""

    step: str
    step_index: int
    step_key: str
    started: dt.datetime
    ended: dt.datetime
    units: int
    attempts: int
    failed: int
    unfinished: int

    @property
    def seconds(self) -> float:
        return (self.ended - self.started).total_seconds()

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        return "running" if self.unfinished else "done"


@dataclass(frozen=True)
class UnitSpan:
    step: str
    step_key: str
    unit_index: int
    status: str
    attempts: int
    started: dt.datetime
    ended: dt.datetime
    slow: bool = False

    @property
    def seconds(self) -> float:
        return (self.ended - self.started).total_seconds()


@dataclass(frozen=True)
class RunTimeline:
    steps: list[StepSpan]
    units: list[UnitSpan]  # the fan-out units of this page
    units_page: Page
    start: dt.datetime | None
    end: dt.datetime | None


def run_timeline(*, workflow: WorkflowState, units_page: str | None, units_per_page: int) -> RunTimeline:
    """One span per step run (aggregated in the database) and, paged, one per unit of the steps that fanned out
    (more than one unit), each from its unit's creation (enqueued) to its last update (finished, or now)."""
    groups = (
        WorkflowUnit.objects.filter(workflow=workflow)
        .order_by()
        .values("step_key", "step_index", "step")
        .annotate(
            started=Min("created_at"),
            ended=Max("updated_at"),
            units=Count("pk"),
            attempts=Sum("attempts"),
            failed=Count("pk", filter=Q(status=UnitStatus.FAILED)),
            unfinished=Count("pk", filter=Q(status__in=[UnitStatus.PENDING, UnitStatus.RUNNING])),
        )
    )
    steps = sorted(
        (
            StepSpan(
                step=row["step"],
                step_index=row["step_index"],
                step_key=str(row["step_key"]),
                started=row["started"],
                ended=row["ended"],
                units=row["units"],
                attempts=row["attempts"] or 0,
                failed=row["failed"],
                unfinished=row["unfinished"],
            )
            for row in groups
        ),
        key=lambda span: (span.started, span.step_index),
    )
    fanned = [span.step_key for span in steps if span.units > 1]
    units_query = WorkflowUnit.objects.filter(workflow=workflow, step_key__in=fanned)
    page = page_of(total=sum(span.units for span in steps if span.units > 1), size=units_per_page, requested=units_page)
    rows = list(
        units_query.order_by("created_at", "step_key", "unit_index").values(
            "step", "step_key", "unit_index", "status", "attempts", "created_at", "updated_at"
        )[page.offset : page.offset + units_per_page]
    )
    # The median of the step's units on this page: enough to make the outliers stand out.
    durations: dict[str, list[float]] = {}
    for row in rows:
        durations.setdefault(str(row["step_key"]), []).append((row["updated_at"] - row["created_at"]).total_seconds())
    medians = {key: statistics.median(values) for key, values in durations.items()}
    units = []
    for row in rows:
        seconds = (row["updated_at"] - row["created_at"]).total_seconds()
        median = medians[str(row["step_key"])]
        units.append(
            UnitSpan(
                step=row["step"],
                step_key=str(row["step_key"]),
                unit_index=row["unit_index"],
                status=row["status"],
                attempts=row["attempts"],
                started=row["created_at"],
                ended=row["updated_at"],
                slow=len(rows) > 2 and median > 0 and seconds > SLOW_FACTOR * median,
            )
        )
    start = min((span.started for span in steps), default=None)
    end = max((span.ended for span in steps), default=None)
    return RunTimeline(steps=steps, units=units, units_page=page, start=start, end=end)


# --- the snapshot tree ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotNode:
    pk: int
    sequence: int
    parent_id: int | None
    event: str
    step: str
    status: str
    created_at: dt.datetime
    children: int
    # Its position in the run's snapshot list, oldest first: what ``restore`` takes.
    index: int
    is_head: bool


@dataclass(frozen=True)
class SnapshotTree:
    nodes: list[SnapshotNode]  # oldest first
    page: Page
    forks: list[int] = field(default_factory=list)  # sequences of the snapshots with more than one child


def run_snapshot_tree(*, workflow: WorkflowState, page: str | None, per_page: int) -> SnapshotTree:
    """One page of the run's snapshots, oldest first (the newest page by default), each with its parent and how
    many snapshots follow from it (two or more: a fork)."""
    snapshots = WorkflowSnapshot.objects.filter(workflow=workflow)
    window = page_of(total=snapshots.count(), size=per_page, requested=page, default_last=True)
    rows = (
        snapshots.order_by("sequence")
        .annotate(child_count=Count("children"))
        .values("pk", "sequence", "parent_id", "event", "step", "status", "created_at", "child_count")[
            window.offset : window.offset + per_page
        ]
    )
    nodes = [
        SnapshotNode(
            pk=row["pk"],
            sequence=row["sequence"],
            parent_id=row["parent_id"],
            event=row["event"],
            step=row["step"],
            status=row["status"],
            created_at=row["created_at"],
            children=row["child_count"],
            index=window.offset + position,
            is_head=row["pk"] == workflow.head_id,
        )
        for position, row in enumerate(rows)
    ]
    return SnapshotTree(nodes=nodes, page=window, forks=[node.sequence for node in nodes if node.children > 1])


# --- the failure, in words --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFailure:
    summary: str  # "Step 5 of 6 (image_generation) failed on unit 3 of 8, after 3 attempts."
    message: str  # "ProviderError: the image API answered 503."
    step: str
    unit_index: int | None


def run_failure(*, workflow: WorkflowState) -> RunFailure | None:
    """A failed run's error said plainly, with the unit it failed on (the latest failed unit of its step)."""
    if workflow.status != WorkflowStatus.FAILED or not isinstance(workflow.error, dict):
        return None
    error: dict[str, Any] = workflow.error
    step = str(error.get("step") or workflow.current_step)
    step_index = error.get("step_index")
    position = f"Step {step_index + 1} of {len(workflow.steps)}" if isinstance(step_index, int) else "A step"
    unit = (
        WorkflowUnit.objects.filter(workflow=workflow, step_key=workflow.step_key, status=UnitStatus.FAILED)
        .order_by("-updated_at")
        .values("unit_index", "attempts")
        .first()
    )
    summary = f"{position} ({step}) failed"
    if unit is not None:
        total = WorkflowUnit.objects.filter(workflow=workflow, step_key=workflow.step_key).count()
        attempts = unit["attempts"]
        summary += (
            f" on unit {unit['unit_index'] + 1} of {total}, after {attempts} attempt{'s' if attempts != 1 else ''}"
        )
    kind = str(error.get("type") or error.get("code") or "Error")
    message = str(error.get("message") or "no message was recorded")
    return RunFailure(
        summary=f"{summary}.",
        message=f"{kind}: {message}",
        step=step,
        unit_index=unit["unit_index"] if unit is not None else None,
    )
