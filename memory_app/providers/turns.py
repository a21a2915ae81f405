"""Provider turns: the threads of a worker process that run units of one fan-out side by side (the engine's lanes,
``workflows.engine.lanes``) begin a unit only once the other thread's unit has its provider's answer.

So the process never has more than one unit before its answer (claimed, its provider call to come or under way),
as a process running one unit at a time, and at most one more after it (decoding and storing the answer,
recording the unit): the provider is not left idle while the process does that bookkeeping, and a process that
dies loses at most the one call under way. A lane waiting for its turn has claimed nothing and holds no lock.

A provider says its answer is in with ``provider_turn_end`` (the HTTP answer of a remote model, the drawing of the
offline renderer); the engine also ends the turn when a unit ends without a call (a cache hit, a failure). A thread
that was given no turns (every thread but the engine's lanes) is never held: ``provider_turn_end`` does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


class ProviderTurns:
    """Which lane's unit is before its answer (at most one)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._before_answer: int | None = None

    def begin(self) -> None:
        """Wait until no other lane's unit is before its answer, then take the turn for this thread's next unit."""
        me = threading.get_ident()
        with self._changed:
            while self._before_answer not in (None, me):
                self._changed.wait()
            self._before_answer = me

    def end(self) -> None:
        """This thread's unit has its answer (or ended without one): the other lane may begin its next unit."""
        with self._changed:
            if self._before_answer == threading.get_ident():
                self._before_answer = None
                self._changed.notify_all()


@contextmanager
def provider_turns(turns: ProviderTurns) -> Iterator[None]:
    """Inside the block, this thread's units take turns with the other threads given ``turns``; the turn is ended
    when the block is left."""
    previous = getattr(_local, "turns", None)
    _local.turns = turns
    try:
        yield
    finally:
        turns.end()
        _local.turns = previous


def provider_turn_end() -> None:
    """The provider's answer is in: the other lane may begin its next unit while this one stores it."""
    turns: ProviderTurns | None = getattr(_local, "turns", None)
    if turns is not None:
        turns.end()
