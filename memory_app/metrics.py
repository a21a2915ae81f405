"""The Prometheus exposition (``/metrics``), correct with several web processes and Celery workers.

The instruments that code observes (request, step and cache-lookup metrics) are ``memory_app.instruments``; this
module sums every process's values and adds the figures read at scrape time. It sits above the selectors and the
services, which never import it.

Processes on one machine share ``PROMETHEUS_MULTIPROC_DIR`` (set by the settings, under ``var/``): every process
writes its counters and histograms to its own memory-mapped files there and ``/metrics`` sums them (the
library's multiprocess mode). The dir is emptied at start by gunicorn (``gunicorn.conf.py``), ``make run`` and
the test settings; dead processes' live gauges are removed by ``mark_process_dead``.

Figures that the database or the broker already hold (cache hits and misses, queue depth, runs by status,
stuck runs) are read at scrape time by ``StateCollector`` instead of being counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memory_app.instruments import multiprocess_dir, process_registry

logger = logging.getLogger("memory_app.metrics")


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
        from memory_app.cache_store import SHARED_LAYER_ERRORS
        from memory_app.selectors.operations import broker_queue_depths, workflow_status_counts, workflows_stuck_count
        from memory_app.services.cache import cache_counters_all

        try:
            # This process's pending counts are written first, then every namespace's counters read.
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
    output = generate_latest(process_registry())
    state = CollectorRegistry()
    state.register(StateCollector())
    return output + generate_latest(state)


def metrics_worker_serve(port: int) -> None:
    """Serve this machine's process metrics on ``port`` (a worker container that no web process shares a
    folder with; docker-compose sets WORKER_METRICS_PORT). The database-backed figures stay on the web's /metrics."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=process_registry())


def metrics_process_dead(pid: int) -> None:
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # prometheus_client's is not annotated
