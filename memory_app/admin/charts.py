"""Geometry of the admin's charts, drawn server-side as inline SVG: no script, no CDN, the admin works offline.

Each function turns figures into coordinates the templates place in ``<svg>`` elements; the figures themselves come
from selectors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Distinguishable on the admin's light and dark themes.
PALETTE = ("#417690", "#e08a1e", "#4c9a2a", "#c0392b", "#8e44ad", "#16a085", "#7f8c8d", "#d35400")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[dt.datetime, float]]


def line_chart(
    series: Sequence[Series], *, width: int = 720, height: int = 180, y_max: float | None = None, y_label: str = ""
) -> dict[str, Any]:
    """Polylines over a shared time axis, scaled to the largest value (or ``y_max``), with a legend."""
    times = [when for line in series for when, _ in line.points]
    if not times:
        return {"lines": [], "width": width, "height": height}
    left, right, top, bottom = 44, width - 8, 8, height - 22
    first, last = min(times), max(times)
    span = (last - first).total_seconds() or 1.0
    highest = y_max if y_max is not None else max((value for line in series for _, value in line.points), default=0)
    highest = highest or 1.0

    def x_of(when: dt.datetime) -> float:
        return round(left + (right - left) * (when - first).total_seconds() / span, 1)

    def y_of(value: float) -> float:
        return round(bottom - (bottom - top) * value / highest, 1)

    lines = []
    for number, line in enumerate(series):
        points = [{"x": x_of(when), "y": y_of(value), "when": when, "value": value} for when, value in line.points]
        lines.append(
            {
                "name": line.name,
                "color": PALETTE[number % len(PALETTE)],
                "points": points,
                "polyline": " ".join(f"{point['x']},{point['y']}" for point in points),
            }
        )
    return {
        "lines": lines,
        "width": width,
        "height": height,
        "left": left,
        "right": right,
        "top": top,
        "bottom": bottom,
        "y_max": highest,
        "y_label": y_label,
        "first": first,
        "last": last,
    }


def gantt(
    rows: Sequence[Any], *, start: dt.datetime | None, end: dt.datetime | None, width: int = 720, row_height: int = 18
) -> dict[str, Any]:
    """One bar per row (anything with ``started`` and ``ended``) on a time axis from ``start`` to ``end``; a bar is
    at least two pixels wide, so an instant step still shows."""
    label_width, right = 190, width - 8
    if start is None or end is None or not rows:
        return {"bars": [], "width": width, "height": 0}
    span = (end - start).total_seconds() or 1.0
    bars = []
    for number, row in enumerate(rows):
        x = label_width + (right - label_width) * (row.started - start).total_seconds() / span
        bar_width = (right - label_width) * (row.ended - row.started).total_seconds() / span
        bars.append(
            {
                "row": row,
                "x": round(x, 1),
                "y": number * row_height + 2,
                "width": round(max(2.0, bar_width), 1),
                "height": row_height - 4,
                "text_y": number * row_height + row_height - 5,
            }
        )
    return {
        "bars": bars,
        "width": width,
        "height": len(rows) * row_height + 4,
        "label_width": label_width,
        "seconds": round(span, 3),
    }


# Geometry of the branch graph: lanes are columns, rows are snapshots oldest first.
LANE_WIDTH = 16
ROW_HEIGHT = 26


def branch_graph(nodes: Sequence[Any]) -> dict[str, Any]:
    """Lanes for a snapshot tree (anything with ``pk`` and ``parent_id``, oldest first): a snapshot stays in its
    parent's lane when it is the parent's first child, and opens a new lane when it forks off; one row per node,
    each with the SVG segments that cross it (the edges from parents above to children below)."""
    lane_of: dict[int, int] = {}
    row_of: dict[int, int] = {}
    taken: set[int] = set()  # parents whose lane a child has continued
    lanes = 0
    for row, node in enumerate(nodes):
        parent = node.parent_id
        if parent in lane_of and parent not in taken:
            lane = lane_of[parent]
            taken.add(parent)
        elif parent not in lane_of and row == 0:
            lane = 0  # the page starts mid-branch (its parent is on an earlier page, or was trimmed)
        else:
            lane = lanes
        lanes = max(lanes, lane + 1)
        lane_of[node.pk] = lane
        row_of[node.pk] = row
    # Each edge: from (parent lane, parent row) to (child lane, child row), drawn in the rows it spans.
    segments: list[list[dict[str, float]]] = [[] for _ in nodes]
    middle = ROW_HEIGHT / 2
    for row, node in enumerate(nodes):
        parent = node.parent_id
        if parent not in row_of:
            continue
        parent_row, parent_x = row_of[parent], _lane_x(lane_of[parent])
        child_x = _lane_x(lane_of[node.pk])
        # Out of the parent's row, bending to the child's lane on the way down; straight down through the rows
        # between; into the child's node.
        segments[parent_row].append({"x1": parent_x, "y1": middle, "x2": child_x, "y2": ROW_HEIGHT})
        for between in range(parent_row + 1, row):
            segments[between].append({"x1": child_x, "y1": 0, "x2": child_x, "y2": ROW_HEIGHT})
        segments[row].append({"x1": child_x, "y1": 0, "x2": child_x, "y2": middle})
    width = max(1, lanes) * LANE_WIDTH + 4
    return {
        "rows": [
            {"node": node, "x": _lane_x(lane_of[node.pk]), "y": middle, "segments": segments[row]}
            for row, node in enumerate(nodes)
        ],
        "lanes": lanes,
        "width": width,
        "height": ROW_HEIGHT,
    }


def _lane_x(lane: int) -> float:
    return lane * LANE_WIDTH + LANE_WIDTH / 2 + 2
