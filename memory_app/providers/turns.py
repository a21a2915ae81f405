"""Provider turns: one provider call at a time among the threads that share a turn.

A worker process that runs two units of a fan-out side by side (the engine's lanes, ``workflows.engine.lanes``)
gives both threads the same lock: a generation the cache misses (its compute-once lock, then the provider's call:
the HTTP round trip of a remote model, the drawing of the offline renderer) waits for the other thread's call to
end, while everything else (the cache lookup, decoding and storing the answer, recording the unit, claiming the
next one) overlaps with the other's call. So the process makes no more provider calls at once than a process
running one unit at a time, and the provider is not left idle while the process does its bookkeeping. A thread
waiting for its turn holds no cache lock: the turn is taken before the compute-once lock
(``cache_get_or_compute(turn=...)``), and given up as soon as the provider's answer is in (``provider_turn_end``).

A thread that was given no turn (every thread but the engine's lanes: web requests, a single unit) is never held:
``provider_turn`` does nothing for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def provider_turns(lock: threading.Lock) -> Iterator[None]:
    """Inside the block, this thread's provider calls take turns on ``lock`` with the other threads given it."""
    previous = getattr(_local, "lock", None)
    _local.lock, _local.holding = lock, False
    try:
        yield
    finally:
        provider_turn_end()
        _local.lock = previous


@contextmanager
def provider_turn() -> Iterator[None]:
    """Around a generation or one provider call: waits for this thread's turn when it shares one
    (``provider_turns``) and does not hold it yet; gives it up at the end unless ``provider_turn_end`` did."""
    lock: threading.Lock | None = getattr(_local, "lock", None)
    if lock is None or _local.holding:
        yield
        return
    lock.acquire()
    _local.holding = True
    try:
        yield
    finally:
        provider_turn_end()


def provider_turn_end() -> None:
    """The provider's answer is in: the other thread's call may begin while this one stores it."""
    if getattr(_local, "holding", False):
        _local.holding = False
        _local.lock.release()
