"""Request throttles whose limit holds across threads, processes and hosts.

DRF's ``SimpleRateThrottle`` reads a list of timestamps from the cache, appends one and writes the list back:
requests served at the same moment by different threads or processes each read the same list and the last
write wins, so a user could go well past the rate (1,481 requests in 32 s against 1,200 a minute). Here each
request is one atomic increment of a counter in the shared cache, and a request is refused when the counters
of the window already reach the limit.

The window slides in ``SLICES`` steps: the counter of the current slice of ``duration / SLICES`` seconds plus
those of the ``SLICES - 1`` slices before it. So at most ``num_requests`` requests are accepted in any span of
``duration - duration / SLICES`` seconds (54 s for a per-minute rate), and never more than that plus one
slice's own requests in a full ``duration``.

Atomic where the cache is: Redis (``INCR`` in a script, production: every process and host shares it; one round
trip a request) and the local-memory cache (one lock, one process). On Redis a read (GET, HEAD, OPTIONS) whose key
had room in the window at its last count in this process sends its count without waiting for the answer: the
view runs meanwhile and ``DeferredThrottleMiddleware`` reads the answer before the response leaves, replacing it
by the 429 if the window was full (``allow_request``). A read has no effects to take back, so only the round trip
is saved; a key near its limit, or not seen yet by this process, is counted before the view as usual, so a client
over its rate does not get the work done for it either. The embedded mode's file cache has no atomic
increment: there the counting is done under an exclusive file lock beside the cache's files, so it holds across
the processes of one machine.
"""

from __future__ import annotations

import fcntl
import math
import os
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache import cache as default_cache
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, HttpResponse
from redis import Redis
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.exceptions import Throttled
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle, SimpleRateThrottle, UserRateThrottle

SLICES = 10
# A read is counted without waiting (see the module docstring) only while its key's last count in this process
# left at least this share of the rate free, and for at most one slice after it.
DEFER_BELOW = 0.8


class AtomicRateThrottleMixin:
    """Replaces ``SimpleRateThrottle``'s timestamp list by per-slice counters (see the module docstring)."""

    cache: Any
    timer: Any
    rate: str | None
    num_requests: int
    duration: int
    key: str | None

    if TYPE_CHECKING:
        # The throttle class this is mixed into defines it (SimpleRateThrottle and its subclasses).
        def get_cache_key(self, request: Any, view: Any) -> str | None: ...

    def _window(self) -> tuple[float, int, float, list[str], int]:
        """Now, the current slice's number, a slice's length, the window's counter keys (oldest first) and how
        long a counter lives (as long as it is inside some window)."""
        now = self.timer()
        slice_seconds = self.duration / SLICES
        current = math.floor(now / slice_seconds)
        keys = [f"{self.key}:{index}" for index in range(current - SLICES + 1, current + 1)]
        return now, current, slice_seconds, keys, math.ceil(self.duration + slice_seconds)

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        # Set by DeferredThrottleMiddleware on reads; a DRF Request reads it from the Django request it wraps.
        pending: list[AtomicRateThrottleMixin] | None = getattr(request, "throttles_pending", None)
        if pending is not None and request.method in SAFE_METHODS and self._send_count():
            pending.append(self)
            return True  # for now: ``verdict`` answers once the view has run
        return self._take()

    def _take(self) -> bool:
        """Count one in the current slice if the window has room for it (atomically); else count nothing."""
        now, current, slice_seconds, keys, timeout = self._window()
        with self._counting():
            count, earlier = self._increment(keys[-1], keys[:-1], timeout)
            return self._settle(count, earlier, now, current, slice_seconds, keys, timeout)

    def _settle(
        self,
        count: int,
        earlier: list[int],
        now: float,
        current: int,
        slice_seconds: float,
        keys: list[str],
        timeout: int,
    ) -> bool:
        """Accept the request just counted if the window had room for it; else take the count back and refuse."""
        total = count + sum(earlier)
        if total <= self.num_requests:
            self._taken = (keys[-1], timeout)
            if total < DEFER_BELOW * self.num_requests:
                _HEADROOM.note(str(self.key), time.monotonic() + slice_seconds)
            else:
                _HEADROOM.forget(str(self.key))
            return True
        _HEADROOM.forget(str(self.key))
        # Refused requests do not count, as with DRF's own throttles: take this one back.
        self._decrement(keys[-1], timeout)
        self._wait = self._seconds_until_free(now, current, slice_seconds, [*earlier, count - 1])
        return False

    # --- counting a read without waiting ------------------------------------------------------------------

    def _send_count(self) -> bool:
        """Send this request's count to Redis without reading the answer, if the key had room at its last count
        here. False (nothing sent) where that does not apply."""
        store = self._store
        if not isinstance(store, RedisCache) or not _HEADROOM.has_room(str(self.key)):
            return False
        window = self._window()
        client, script = _redis_counting(store)
        names = [store.make_key(name) for name in window[3]]
        pool = client.connection_pool
        connection: Any = pool.get_connection()  # redis-py's connection classes are not typed
        try:
            connection.send_command("EVALSHA", script.sha, len(names), *names, window[4])
        except (RedisConnectionError, RedisTimeoutError):
            connection.disconnect()
            pool.release(connection)
            return False  # counted before the view instead, with the client's retries
        self._sent: tuple[Any, tuple[float, int, float, list[str], int]] | None = (connection, window)
        return True

    def verdict(self) -> bool:
        """Read the answer to the count ``allow_request`` sent and decide as ``_take`` does. When Redis could not
        answer it (the script unknown to a restarted server, a broken connection) the request is counted again
        the usual way, so a count that reached Redis before the connection broke may be counted twice."""
        sent, self._sent = self._sent, None
        if sent is None:
            raise RuntimeError("verdict() without a count sent by allow_request()")
        connection, (now, current, slice_seconds, keys, timeout) = sent
        client, _ = _redis_counting(self._store)  # type: ignore[arg-type]  # a RedisCache: _send_count checked
        try:
            count, *earlier = connection.read_response()
        except NoScriptError:
            client.connection_pool.release(connection)
            return self._take()
        except (RedisConnectionError, RedisTimeoutError):
            connection.disconnect()
            client.connection_pool.release(connection)
            return self._take()
        except BaseException:
            connection.disconnect()  # its answer may still be on the way: nobody else may read it
            client.connection_pool.release(connection)
            raise
        client.connection_pool.release(connection)
        return self._settle(
            int(count), [int(value or 0) for value in earlier], now, current, slice_seconds, keys, timeout
        )

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)

    def _seconds_until_free(self, now: float, current: int, slice_seconds: float, counts: list[int]) -> float:
        """How long until enough of the oldest slices have left the window to let one more request in."""
        excess = sum(counts) - self.num_requests + 1
        for offset, count in enumerate(counts):
            excess -= count
            if excess <= 0:
                # The slice at this offset leaves the window when the slice SLICES after it begins.
                leaves_at = (current - SLICES + 1 + offset + SLICES) * slice_seconds
                return max(leaves_at - now, 0.0)
        return float(self.duration)

    # --- the counters -------------------------------------------------------------------------------------

    @property
    def _store(self) -> BaseCache:
        """The cache backend itself. DRF's ``cache`` is Django's ``default_cache``, a proxy that no
        ``isinstance`` check sees through: through it, Redis took three round trips (add, incr, get_many) instead
        of one pipeline, and the file cache was counted without its lock."""
        if self.cache is default_cache:
            return caches[DEFAULT_CACHE_ALIAS]
        store: BaseCache = self.cache
        return store

    def _atomic(self) -> bool:
        return not isinstance(self._store, FileBasedCache)

    @contextmanager
    def _counting(self) -> Iterator[None]:
        if self._atomic():
            yield
            return
        # The file cache's increment is a read and a write: one lock file beside its entries orders the counting
        # of every process on the machine.
        directory = self._store._dir  # type: ignore[attr-defined]  # a FileBasedCache here (``_atomic``)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "throttle.lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _increment(self, key: str, earlier_keys: list[str], timeout: int) -> tuple[int, list[int]]:
        """This slice's counter after adding one, and the earlier slices' counters (oldest first)."""
        store = self._store
        if isinstance(store, RedisCache):
            # One round trip, one script run atomically by Redis: create the counter with its expiry if it is
            # new, increment it, read the earlier slices.
            client, script = _redis_counting(store)
            names = [store.make_key(name) for name in (*earlier_keys, key)]
            count, *earlier = script(keys=names, args=[timeout], client=client)
            return int(count), [int(value or 0) for value in earlier]
        if self._atomic():
            count = None
            for _ in range(3):
                self.cache.add(key, 0, timeout)
                try:
                    count = int(self.cache.incr(key))
                    break
                except ValueError:
                    continue  # the counter expired between the two calls: create it again
            if count is None:
                raise RuntimeError(f"could not count a request in the throttle counter {key!r}")
            values = self.cache.get_many(earlier_keys)
        else:
            values = self.cache.get_many([*earlier_keys, key])
            count = int(values.get(key, 0)) + 1
            self.cache.set(key, count, timeout)
        return count, [int(values.get(name, 0)) for name in earlier_keys]

    def _decrement(self, key: str, timeout: int) -> None:
        store = self._store
        if isinstance(store, RedisCache):
            name = store.make_and_validate_key(key)
            store._cache.get_client(name, write=True).decr(name)
        elif self._atomic():
            # Expired already (ValueError): nothing left to take back.
            with suppress(ValueError):
                self.cache.decr(key)
        else:
            self.cache.set(key, max(int(self.cache.get(key, 0)) - 1, 0), timeout)


# KEYS: the earlier slices' counters, then the current one's; ARGV[1]: how long a new counter lives. Answers the
# current counter after the increment, then the earlier ones (false, read as 0, for those that do not exist).
_COUNT_SCRIPT = """
local current = KEYS[#KEYS]
redis.call('SET', current, 0, 'EX', ARGV[1], 'NX')
local answer = {redis.call('INCR', current)}
if #KEYS > 1 then
    local earlier = redis.call('MGET', unpack(KEYS, 1, #KEYS - 1))
    for index = 1, #KEYS - 1 do
        answer[index + 1] = earlier[index]
    end
end
return answer
"""
_COUNTING: weakref.WeakKeyDictionary[Any, tuple[Redis, Script]] = weakref.WeakKeyDictionary()


def _redis_counting(store: RedisCache) -> tuple[Redis, Script]:
    """The redis-py client of the cache's write server and the counting script, made once per cache backend:
    Django's ``get_client`` builds a new client (and its table of reply callbacks) on every call, which cost
    more than the round trip."""
    backend = store._cache
    found = _COUNTING.get(backend)
    if found is None:
        client = backend.get_client(write=True)
        found = _COUNTING[backend] = (client, client.register_script(_COUNT_SCRIPT))
    return found


class _Headroom:
    """The throttle keys whose last count in this process left room in their window, until when that is taken
    to still hold (one slice). Forgetting is always safe: the next read of the key is counted before its view."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def has_room(self, key: str) -> bool:
        return self._until.get(key, 0.0) > time.monotonic()

    def note(self, key: str, until: float) -> None:
        if len(self._until) >= self.LIMIT:
            self._until.clear()  # many keys at once: start over rather than keep a large table
        self._until[key] = until

    def forget(self, key: str) -> None:
        self._until.pop(key, None)

    def clear(self) -> None:
        self._until.clear()


_HEADROOM = _Headroom()


class DeferredThrottleMiddleware:
    """Lets the throttles of an API read count it without waiting for Redis (see the module docstring), and reads
    their answers once the view has run: if one refuses, the view's response is dropped for the 429 in the
    envelope; Redis unreachable is the 503 it is when counted before the view. Placed last, so every other
    middleware sees the response that is sent."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method not in SAFE_METHODS or not request.path.startswith("/api/"):
            return self.get_response(request)
        pending: list[AtomicRateThrottleMixin] = []
        request.throttles_pending = pending  # type: ignore[attr-defined]  # ours: read by allow_request
        try:
            response = self.get_response(request)
        except BaseException:
            for throttle in pending:
                with suppress(Exception):
                    throttle.verdict()
            raise
        waits: list[float | None] = []
        failure: Exception | None = None
        for throttle in pending:  # every answer is read, as DRF asks every throttle
            try:
                if not throttle.verdict():
                    waits.append(throttle.wait())
            except (RedisConnectionError, RedisTimeoutError) as exc:
                failure = exc
        if failure is None and not waits:
            return response
        from memory_app.api.envelope import error_response

        # The dropped response is not closed: closing one sends request_finished, which belongs to the response
        # sent. What it may hold (a file, a generator) is closed when it is collected.
        if failure is not None:
            return error_response(request, failure)
        return error_response(request, Throttled(max((wait for wait in waits if wait is not None), default=None)))


class AtomicAnonRateThrottle(AtomicRateThrottleMixin, AnonRateThrottle):
    """Anonymous requests per client address (scope ``anon``)."""


class AtomicUserRateThrottle(AtomicRateThrottleMixin, UserRateThrottle):
    """Authenticated requests per user (scope ``user``), anonymous ones per address."""


class AtomicScopedRateThrottle(AtomicRateThrottleMixin, ScopedRateThrottle):
    """Requests per user or address to the views of one ``throttle_scope`` (the login route's ``auth``)."""

    def allow_request(self, request: Any, view: Any) -> bool:
        # ScopedRateThrottle reads the view's scope and rate here, then calls the parent's allow_request.
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        num_requests, duration = self.parse_rate(self.rate)
        if num_requests is None or duration is None:
            return True  # no rate for this scope (as the parent's allow_request answers it)
        self.num_requests, self.duration = num_requests, duration
        return super().allow_request(request, view)


class AtomicFailureCounter(AtomicRateThrottleMixin, SimpleRateThrottle):
    """Counts only failures (wrong credentials) against a rate, with the same atomic slice counters. Subclasses
    set ``key``.

    Two ways to use it: ``exhausted`` then ``record_failure`` (the failure is counted once known; attempts sent
    at once may all pass the check before any is counted), or ``reserve`` before the attempt and ``release``
    after a success (attempts sent at once are bounded exactly: each takes its place before it is checked)."""

    def exhausted(self) -> bool:
        """Whether the failures in the window reach the rate (and then ``wait()`` says for how long)."""
        now, current, slice_seconds, keys, _ = self._window()
        values = self.cache.get_many(keys)
        counts = [int(values.get(name, 0)) for name in keys]
        if sum(counts) < self.num_requests:
            return False
        self._wait = self._seconds_until_free(now, current, slice_seconds, counts)
        return True

    def record_failure(self) -> None:
        _, _, _, keys, timeout = self._window()
        with self._counting():
            self._increment(keys[-1], [], timeout)

    def reserve(self) -> bool:
        """Count this attempt as a failure in advance if the window has room for it; False (nothing counted, and
        ``wait()`` says how long) if not."""
        return self._take()

    def release(self) -> None:
        """The reserved attempt succeeded: it no longer counts."""
        key, timeout = self._taken
        with self._counting():
            self._decrement(key, timeout)
