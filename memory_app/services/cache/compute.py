"""Compute once: ``cache_get_or_compute`` and the ``cached()`` decorator; concurrent misses of one key compute once,
under a Redis lock renewed by its holder in production or a lock of the process in the embedded mode."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, ParamSpec, TypeVar

from django.conf import settings
from django.utils import timezone
from redis.exceptions import LockNotOwnedError, RedisError

from memory_app.errors import ValidationFailed
from memory_app.services.cache.counters import _counters
from memory_app.services.cache.files import _file_entry_hit
from memory_app.services.cache.keys import cache_key
from memory_app.services.cache.memory import _memory_store
from memory_app.services.cache.namespaces import cache_namespace_config
from memory_app.services.cache.operations import CacheLookup, _store, cache_lookup
from memory_app.services.cache.shared import SHARED_LAYER_ERRORS, _raw_key, _redis_client, _uses_redis
from memory_app.services.cache.values import _unpack_memory_value

logger = logging.getLogger("memory_app.cache")

CachePolicy = Literal["use", "refresh", "bypass"]
CACHE_POLICIES: tuple[str, ...] = ("use", "refresh", "bypass")

P = ParamSpec("P")
R = TypeVar("R")


_local_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_local_locks_guard = threading.Lock()


@contextlib.contextmanager
def _compute_lock(namespace: str, digest: str) -> Iterator[None]:
    """One computation per key at a time: a Redis lock in production, an in-process lock in the embedded mode.

    A second caller waits for the first at most ``lock_timeout``, then computes anyway, as a cache must never
    block work forever. The Redis lock lives ``lock_ttl`` seconds and its holder renews it while it computes (for
    ``lock_timeout`` at most), so a holder that is killed (SIGKILL, OOM) frees its key within ``lock_ttl``, while a
    slow computation that is alive keeps it. The embedded lock is a ``threading.Lock``: it cannot outlive its
    process.
    """
    options = settings.MEMORY.cache_options
    if _uses_redis():
        with _RenewedRedisLock(
            _raw_key(f"cmcache:lock:{namespace}:{digest}"), ttl=options.lock_ttl, longest=options.lock_timeout
        ):
            yield
        return
    with _local_locks_guard:
        lock = _local_locks.get(f"{namespace}:{digest}")
        if lock is None:
            lock = threading.Lock()
            _local_locks[f"{namespace}:{digest}"] = lock
    acquired = lock.acquire(timeout=options.lock_timeout)
    try:
        yield
    finally:
        if acquired:
            lock.release()


class _RenewedRedisLock:
    """A Redis lock owned by a random token, with a short time to live that a thread of its holder renews.

    Renewal and release are compare-and-set scripts on the token (redis-py's ``Lock``), so a holder whose lock
    expired (it was stopped, or Redis was out of reach for longer than the time to live) can neither extend nor
    delete the lock another caller holds since. ``thread_local=False``: the renewal thread uses the holder's token.
    ``longest`` bounds both the wait for the lock and the time it is renewed: a computation that hangs (alive)
    keeps its key no longer than that plus ``ttl``.
    """

    def __init__(self, name: str, *, ttl: int, longest: int) -> None:
        self._lock = _redis_client().lock(name, timeout=ttl, sleep=0.1, thread_local=False)
        self._ttl = ttl
        self._longest = longest
        self._stop = threading.Event()
        self._renewal: threading.Thread | None = None

    def __enter__(self) -> None:
        try:
            acquired = self._lock.acquire(blocking_timeout=self._longest)
        except RedisError:
            logger.warning("cache lock %s unavailable (Redis unreachable); computing without it", self._lock.name)
            return
        if not acquired:
            logger.warning("cache lock %s still held after %s s; computing without it", self._lock.name, self._longest)
            return
        self._renewal = threading.Thread(target=self._renew, name="cache-lock-renewal", daemon=True)
        self._renewal.start()

    def _renew(self) -> None:
        renew_until = time.monotonic() + self._longest
        # Three renewals per time to live: one late or failed renewal does not lose the lock.
        while not self._stop.wait(self._ttl / 3):
            if time.monotonic() >= renew_until:
                logger.warning("cache lock %s held for %s s; no longer renewed", self._lock.name, self._longest)
                return
            try:
                self._lock.reacquire()
            except LockNotOwnedError:
                logger.warning("cache lock %s expired before it was renewed; the computation goes on", self._lock.name)
                return
            except RedisError as exc:
                logger.warning("cache lock %s not renewed (%s); trying again", self._lock.name, exc)

    def __exit__(self, *exc_info: object) -> None:
        if self._renewal is None:
            return
        self._stop.set()
        self._renewal.join(timeout=self._ttl)
        # Not ours any more (expired meanwhile): the token check leaves the next holder's lock alone.
        with contextlib.suppress(RedisError):
            self._lock.release()


def cache_get_or_compute(
    *,
    namespace: str,
    key: Any,
    compute: Callable[[], R],
    policy: CachePolicy = "use",
    ttl: int | None = None,
    content_type: str | None = None,
) -> R:
    """The cached value of ``key``, computing and storing it on a miss; concurrent misses compute once.

    ``policy``: ``use`` (read, compute on a miss), ``refresh`` (compute and overwrite), ``bypass`` (compute;
    the cache is neither read nor written nor counted).
    """
    if policy not in CACHE_POLICIES:
        raise ValidationFailed(
            f"Unknown cache policy '{policy}'.", details={"fields": {"cache_policy": [f"One of {CACHE_POLICIES}."]}}
        )
    cache_namespace_config(namespace=namespace)
    if policy == "bypass":
        return compute()
    digest = cache_key(namespace=namespace, key=key)
    if policy == "use":
        lookup = _shielded(namespace, lambda: cache_lookup(namespace=namespace, key=key), CacheLookup(hit=False))
        if lookup.hit:
            cached_value: R = lookup.value  # what compute() returned when it was stored
            return cached_value
    with _compute_lock(namespace, digest):
        if policy == "use":
            # Someone may have computed it while we waited for the lock. Read without counting a second miss.
            lookup = _shielded(namespace, lambda: _peek(namespace, key), CacheLookup(hit=False))
            if lookup.hit:
                computed_meanwhile: R = lookup.value
                return computed_meanwhile
        # The computation's own errors are never caught here: only the cache's.
        value = compute()
        _shielded(
            namespace,
            lambda: _store(namespace, digest, value, ttl=ttl, content_type=content_type),
            False,
        )
        return value


def _shielded(namespace: str, operation: Callable[[], R], fallback: R) -> R:
    """A cache outage must not stop the work it would have saved: log it and go on uncached."""
    try:
        return operation()
    except SHARED_LAYER_ERRORS as exc:
        logger.warning("cache %s unavailable, going on without it: %s", namespace, exc)
        return fallback


def _peek(namespace: str, key: Any) -> CacheLookup:
    """A lookup whose miss is not counted again (the caller counted one already); a hit counts as a hit."""
    config = cache_namespace_config(namespace=namespace)
    digest = cache_key(namespace=namespace, key=key)
    if config.backend == "file":
        if _file_entry_hit(namespace, digest, timezone.now()) is None:
            return CacheLookup(hit=False)
        return cache_lookup(namespace=namespace, key=key)
    packed = _memory_store().get(namespace, digest)
    if packed is None:
        return CacheLookup(hit=False)
    _counters().add(namespace, hits=1)
    return CacheLookup(hit=True, value=_unpack_memory_value(packed))


def cached(
    namespace: str,
    *,
    key: Callable[..., Any] | Iterable[str] | None = None,
    ttl: int | None = None,
    content_type: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: the function's result cached in ``namespace`` under a hash of its call.

    ``key`` chooses what identifies a call: None → every argument but a method's ``self``/``cls``; a list of
    parameter names → those (defaults applied); a callable → whatever it returns for the same arguments.
    The function's qualified name is always part of the key. Callers pick a policy per call with the keyword
    ``cache_policy``.
    """
    names = None if key is None or callable(key) else tuple(key)

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)
        identity = f"{function.__module__}.{function.__qualname__}"

        def call_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if callable(key):
                return {"function": identity, "key": key(*args, **kwargs)}
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            # A method's instance is not part of what it computes (and has no canonical form).
            arguments = {name: value for name, value in bound.arguments.items() if name not in {"self", "cls"}}
            if names is not None:
                arguments = {name: arguments[name] for name in names}
            return {"function": identity, "arguments": arguments}

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            policy = kwargs.pop("cache_policy", "use")
            return cache_get_or_compute(
                namespace=namespace,
                key=call_key(args, kwargs),
                compute=lambda: function(*args, **kwargs),
                policy=policy,  # type: ignore[arg-type]  # the caller's keyword; cache_get_or_compute refuses an unknown policy
                ttl=ttl,
                content_type=content_type,
            )

        return wrapper

    return decorate
