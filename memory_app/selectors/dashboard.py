"""The staff dashboard's figures over time, from the stored metric snapshots (the scheduled task takes them)."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

from django.utils import timezone

from memory_app.models import MetricSnapshot

MAX_POINTS = 500
Points = list[tuple[dt.datetime, float]]


@dataclass(frozen=True)
class DashboardSeries:
    snapshots: int
    since: dt.datetime
    # Per namespace: the share of lookups between two snapshots that hit (a counter that went down was reset).
    hit_rate: dict[str, Points]
    entries: dict[str, Points]
    memory_bytes: dict[str, Points]
    runs_by_status: dict[str, Points]


def dashboard_series(*, hours: int) -> DashboardSeries:
    """The snapshots of the last ``hours`` (the newest ``MAX_POINTS`` of them) as series per namespace and status."""
    since = timezone.now() - dt.timedelta(hours=hours)
    newest = list(
        MetricSnapshot.objects.filter(taken_at__gte=since)
        .order_by("-taken_at")
        .only("taken_at", "cache", "workflow_states")[:MAX_POINTS]
    )
    snapshots = newest[::-1]
    hit_rate: dict[str, Points] = {}
    entries: dict[str, Points] = {}
    memory_bytes: dict[str, Points] = {}
    runs: dict[str, Points] = {}
    for snapshot in snapshots:
        for namespace, figures in (snapshot.cache or {}).items():
            if not isinstance(figures, dict):
                continue
            entries.setdefault(namespace, []).append((snapshot.taken_at, float(figures.get("current_size") or 0)))
            memory_bytes.setdefault(namespace, []).append(
                (snapshot.taken_at, float(figures.get("memory_usage_bytes") or 0))
            )
        for status, count in (snapshot.workflow_states or {}).items():
            runs.setdefault(status, []).append((snapshot.taken_at, float(count or 0)))
    for earlier, later in itertools.pairwise(snapshots):
        for namespace, figures in (later.cache or {}).items():
            before = (earlier.cache or {}).get(namespace) or {}
            if not isinstance(figures, dict):
                continue
            deltas = []
            for name in ("hits", "misses"):
                now_value, then_value = int(figures.get(name) or 0), int(before.get(name) or 0)
                deltas.append(now_value - then_value if now_value >= then_value else now_value)
            lookups = deltas[0] + deltas[1]
            if lookups:
                hit_rate.setdefault(namespace, []).append((later.taken_at, round(deltas[0] / lookups, 4)))
    return DashboardSeries(
        snapshots=len(snapshots),
        since=since,
        hit_rate=hit_rate,
        entries=entries,
        memory_bytes=memory_bytes,
        runs_by_status={status: points for status, points in sorted(runs.items()) if any(v for _, v in points)},
    )
