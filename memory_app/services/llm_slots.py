"""Slots for the LLM calls a web request makes (generate-with-context), so that slow calls stall nobody else.

Two bounds, checked in this order before anything is written:

- per user, across every web process: ``api.llm_calls_per_user`` slots, each a key of the Django cache taken with
  ``cache.add`` (Redis ``SET NX`` in production, shared by every web host). A slot is given back when the call
  ends; one held by a process that was killed frees itself when its lease (three provider timeouts plus 30 s: a
  generate may also summarize before and after its chat) runs out. Beyond the bound: 429 ``THROTTLED``.
  In the embedded mode the cache is the file-based one, whose ``add`` is a read then a write: the slots are
  taken under an exclusive ``flock`` on ``var/llm-slots.lock``, so every process of the machine agrees.
- per web process: ``api.llm_calls_per_process`` calls at once, by default half the process's threads
  (``COMICMEM_WEB_THREADS``, which gunicorn.conf.py sets from gunicorn's ``threads``; 4 without it), at least
  one. The other threads are kept for health checks and everyone else's requests. Beyond: 503
  ``LLM_CAPACITY_EXHAUSTED``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.redis import RedisCache

from memory_app.errors import LLMCallsPerUserExceeded, LLMCapacityExhausted

logger = logging.getLogger(__name__)

DEFAULT_WEB_THREADS = 4
WEB_THREADS_VARIABLE = "COMICMEM_WEB_THREADS"

_process_lock = threading.Lock()
_process_in_flight = 0


def llm_calls_per_process() -> int:
    configured = settings.MEMORY.api.llm_calls_per_process
    if configured is not None:
        return configured
    try:
        threads = int(os.environ.get(WEB_THREADS_VARIABLE, DEFAULT_WEB_THREADS))
    except ValueError:
        threads = DEFAULT_WEB_THREADS
    return max(1, threads // 2)


def _lease_seconds() -> int:
    return int(settings.MEMORY.providers.llm.timeout_seconds * 3) + 30


@contextmanager
def _slots_lock() -> Iterator[None]:
    """Makes the file cache's check-then-write ``add`` atomic across the machine's processes (and threads)."""
    if not isinstance(caches["default"], FileBasedCache):
        yield  # Redis's add is one SET NX; the in-memory cache of the tests holds its own lock
        return
    with open(settings.VAR_DIR / "llm-slots.lock", "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _user_slot_take(user_id: int, limit: int, token: str) -> str | None:
    with _slots_lock():
        for index in range(limit):
            key = f"llm-slot:{user_id}:{index}"
            if cache.add(key, token, timeout=_lease_seconds()):
                return key
    return None


# Delete the slot only if it still holds our token, in one step (a get then a delete could remove the slot that
# another call took between the two, once our lease had run out).
_GIVE_BACK_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _user_slot_give_back(key: str, token: str) -> None:
    """Never raises: the call it guarded is over (its answer stored, or its own error on its way); a slot that
    cannot be given back now frees itself when its lease runs out."""
    try:
        backend = caches["default"]
        if isinstance(backend, RedisCache):
            name = backend.make_and_validate_key(key)
            stored = backend._cache.get_client(name, write=True)
            # The cache pickles its values: compare with our token as it stored it.
            serializer = backend._cache._serializer  # type: ignore[attr-defined]  # Django's, undeclared in its stubs
            stored.eval(_GIVE_BACK_SCRIPT, 1, name, serializer.dumps(token))
            return
        with _slots_lock():
            # Another token there means our lease ran out and someone else holds the slot now: leave it.
            if cache.get(key) == token:
                cache.delete(key)
    except Exception:  # noqa: BLE001 - see the docstring; logged
        logger.warning("could not give back the LLM call slot %s; it frees itself when its lease ends", key)


def _process_slot_take(limit: int) -> bool:
    global _process_in_flight
    with _process_lock:
        if _process_in_flight >= limit:
            return False
        _process_in_flight += 1
        return True


def _process_slot_give_back() -> None:
    global _process_in_flight
    with _process_lock:
        _process_in_flight -= 1


@contextmanager
def llm_call_slot(*, user_id: int) -> Iterator[None]:
    """Hold one of the user's slots and one of this process's for the duration of the block, or raise before
    entering it: ``LLMCallsPerUserExceeded`` (429) or ``LLMCapacityExhausted`` (503)."""
    user_limit = settings.MEMORY.api.llm_calls_per_user
    token = uuid.uuid4().hex
    key = _user_slot_take(user_id, user_limit, token)
    if key is None:
        raise LLMCallsPerUserExceeded(details={"llm_calls_per_user": user_limit})
    try:
        process_limit = llm_calls_per_process()
        if not _process_slot_take(process_limit):
            raise LLMCapacityExhausted(details={"llm_calls_per_process": process_limit})
        try:
            yield
        finally:
            _process_slot_give_back()
    finally:
        _user_slot_give_back(key, token)
