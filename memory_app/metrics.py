"""Prometheus metrics (prometheus-client), correct with several web processes and Celery workers.

Processes on one machine share ``PROMETHEUS_MULTIPROC_DIR`` (set by the settings, under ``var/``): every process
writes its counters and histograms to its own memory-mapped files there and ``/metrics`` sums them (the
library's multiprocess mode). The dir is emptied at start by gunicorn (``gunicorn.conf.py``), ``make run`` and
the test settings; dead processes' live gauges are removed by ``mark_process_dead``.

Figures that the database or the broker already hold (cache hits and misses, queue depth, runs by status,
stuck runs) are read at scrape time by ``StateCollector`` instead of being counted twice.

Labels are bounded: a request is labelled with its resolved route name (never the raw path), a step with its
workflow type and step name (both come from code, not from users).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

logger = logging.getLogger("memory_app.metrics")

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


def multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def _histogram_sums(histogram_name: str, label: str) -> dict[str, tuple[float, float]]:
    """{label value: (count, sum)} of a histogram across every process (this one alone without the dir)."""
    registry = _process_registry()
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


def _process_registry() -> CollectorRegistry:
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


class StateCollector(Collector):
    """Read at scrape time from the database, the cache layer's counters and the broker."""

    def collect(self) -> Iterator[Metric]:
        from django.db import DatabaseError

        try:
            yield from self._collect()
        except DatabaseError as exc:
            # The database is down: the process metrics are still worth a scrape; these are simply absent.
            logger.warning("metrics: database figures skipped: %s", exc)

    def _collect(self) -> Iterator[Metric]:
        from memory_app.selectors.operations import (
            broker_queue_depths,
            cache_counters_all,
            workflow_status_counts,
            workflows_stuck_count,
        )
        from memory_app.services.cache import SHARED_LAYER_ERRORS

        try:
            counters = cache_counters_all()
        except SHARED_LAYER_ERRORS as exc:
            # Redis is down: no cache series rather than zeros, which Prometheus would read as a counter reset.
            logger.warning("metrics: cache counters skipped: %s", exc)
            counters = {}
        if counters:
            hits = CounterMetricFamily(
                "comicmem_cache_hits", "Cache hits, by namespace (all processes).", labels=["namespace"]
            )
            misses = CounterMetricFamily(
                "comicmem_cache_misses", "Cache misses, by namespace (all processes).", labels=["namespace"]
            )
            for namespace, counts in counters.items():
                hits.add_metric([namespace], counts["hits"])
                misses.add_metric([namespace], counts["misses"])
            yield hits
            yield misses
        depth = GaugeMetricFamily("comicmem_queue_depth", "Messages waiting in the broker, by queue.", labels=["queue"])
        for queue, count in broker_queue_depths().items():
            depth.add_metric([queue], count)
        yield depth
        runs = GaugeMetricFamily("comicmem_workflow_runs", "Workflow runs, by status.", labels=["status"])
        for status, count in workflow_status_counts().items():
            runs.add_metric([status], count)
        yield runs
        yield GaugeMetricFamily(
            "comicmem_workflow_runs_stuck", "Runs currently flagged as stuck.", value=workflows_stuck_count()
        )


def metrics_exposition() -> bytes:
    """The Prometheus text format: every process's metrics plus the state read now."""
    registry = CollectorRegistry()
    if multiprocess_dir() is not None:
        MultiProcessCollector(registry)
        output = generate_latest(registry)
    else:
        output = generate_latest(REGISTRY)
    state = CollectorRegistry()
    state.register(StateCollector())
    return output + generate_latest(state)


def metrics_worker_serve(port: int) -> None:
    """Serve this machine's process metrics on ``port`` (a worker container that no web process shares a
    folder with; docker-compose sets WORKER_METRICS_PORT). The database-backed figures stay on the web's /metrics."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=_process_registry())


def metrics_process_dead(pid: int) -> None:
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
