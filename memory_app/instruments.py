"""The Prometheus instruments (prometheus-client) that code observes as it runs, and the reads of their sums.

Services, the middleware and the workflow engine import the metric objects and helpers from here; the
exposition (``/metrics``, and the figures read at scrape time from the database and the broker) is
``memory_app.metrics``, which sits above the selectors. This module imports nothing of ``memory_app`` so that
anything may time itself without an import circle.

Processes on one machine share ``PROMETHEUS_MULTIPROC_DIR`` (set by the settings, under ``var/``): every process
writes its counters and histograms to its own memory-mapped files there and ``/metrics`` sums them (the
library's multiprocess mode).

Labels are bounded: a request is labelled with its resolved route name (never the raw path), a step with its
workflow type and step name (both come from code, not from users).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.context_managers import InprogressTracker
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY

HTTP_REQUESTS = Counter(
    "comicmem_http_requests", "HTTP requests served, by route name, method and status.", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "comicmem_http_request_duration_seconds",
    "Time to serve an HTTP request, by route name and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STEP_DURATION = Histogram(
    "comicmem_workflow_step_duration_seconds",
    "Time one unit of a workflow step ran in a worker, by workflow type, step and outcome.",
    ["workflow_type", "step", "outcome"],
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800),
)
STEP_FAILURES = Counter(
    "comicmem_workflow_step_failures",
    "Units of a workflow step that failed (retried or final), by workflow type and step.",
    ["workflow_type", "step", "final"],
)
WORKFLOW_STUCK = Counter(
    "comicmem_workflow_stuck_detected",
    "Runs flagged as stuck by the detection task, by workflow type.",
    ["workflow_type"],
)
# A live gauge: each process writes its own value and a scrape sums the living processes' (a dead pool process's
# file is removed by ``mark_process_dead``), so a crash never leaves a unit counted as running.
UNITS_RUNNING = Gauge(
    "comicmem_workflow_units_running",
    "Units of workflow steps running now (a fan-out step's units side by side), by workflow type and step.",
    ["workflow_type", "step"],
    multiprocess_mode="livesum",
)
CACHE_LOOKUP_LATENCY = Histogram(
    "comicmem_cache_lookup_duration_seconds",
    "Time of one cache lookup, by namespace.",
    ["namespace"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)


def step_observe(*, workflow_type: str, step: str, seconds: float, outcome: str) -> None:
    """Called by the engine after each unit: ``outcome`` is done, retry, failed or skipped."""
    STEP_DURATION.labels(workflow_type, step, outcome).observe(seconds)
    if outcome in {"retry", "failed"}:
        STEP_FAILURES.labels(workflow_type, step, "true" if outcome == "failed" else "false").inc()


def unit_running(*, workflow_type: str, step: str) -> InprogressTracker:
    """Held by the engine while a unit's step runs: the fan-out concurrency is this gauge summed over workers."""
    return UNITS_RUNNING.labels(workflow_type, step).track_inprogress()


def multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def process_registry() -> CollectorRegistry:
    """Every process's metrics of this machine (this process's alone without the multiprocess dir)."""
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client's is not annotated
    return registry


def _histogram_sums(histogram_name: str, label: str) -> dict[str, tuple[float, float]]:
    """{label value: (count, sum)} of a histogram across every process (this one alone without the dir)."""
    registry = process_registry()
    totals: dict[str, list[float]] = {}
    for family in registry.collect():
        if family.name != histogram_name:
            continue
        for sample in family.samples:
            key = sample.labels.get(label)
            if key is None:
                continue
            entry = totals.setdefault(key, [0.0, 0.0])
            if sample.name.endswith("_count"):
                entry[0] += sample.value
            elif sample.name.endswith("_sum"):
                entry[1] += sample.value
    return {key: (value[0], value[1]) for key, value in totals.items()}


def cache_lookup_latency() -> dict[str, tuple[float, float]]:
    """{namespace: (lookups, seconds)} of the cache lookups timed on this machine."""
    return _histogram_sums("comicmem_cache_lookup_duration_seconds", "namespace")
