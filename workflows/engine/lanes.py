"""The second lane of a worker process: one more thread that runs units of the fan-out the process is running.

A fan-out unit spends most of its time waiting on its provider (an image model answers in seconds), and the rest
claiming, storing and recording (tens of milliseconds, a dozen statements). Run one unit at a time, a process
leaves the provider idle during that rest, at every unit. With two lanes that take turns
(``memory_app.providers.turns``: a lane begins a unit only once the other's has its provider's answer), the other
lane's call is under way while one lane records its unit, and a process still has one unit before its answer at a
time, as a process without lanes.

Each lane claims pending units of the same step by compare-and-set, as a message's delivery claims them (the
messages of units a lane took find them held or done and do nothing), runs and records each exactly as a delivered
unit is run and recorded, under the delivering task's id (a cancel's revoke reaches both lanes) and lease owner.
A process that dies holds at most two units, each under a lease that recovery takes over when it ends.

Only on PostgreSQL (the lanes write at the same time, on two connections), outside a caller's transaction, for a
unit delivered by a task, with ``workflow.fan_out_lanes`` on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from django.conf import settings
from django.db import close_old_connections, connection

R = TypeVar("R")

_executors: dict[int, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def fan_out_lanes_supported() -> bool:
    """Whether this process may run a second lane: configured on, PostgreSQL, not inside a caller's transaction."""
    return (
        settings.MEMORY.workflow.fan_out_lanes and connection.vendor == "postgresql" and not connection.in_atomic_block
    )


def lane_start(job: Callable[[], R]) -> Future[R]:
    """Run ``job`` in this process's second lane (one thread, started on first use; after a fork, a new one). The
    lane's database connection is closed after each job: nothing is left open between two fan-outs."""

    def run() -> R:
        close_old_connections()
        try:
            return job()
        finally:
            connection.close()

    pid = os.getpid()
    with _executors_lock:
        executor = _executors.get(pid)
        if executor is None:
            # A forked pool process inherits the parent's map, never its thread: its own executor, keyed by pid.
            executor = _executors[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fan-out-lane")
    return executor.submit(run)
