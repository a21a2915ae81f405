"""The cache layer (seed §4): namespaces from config, keys, get/set/delete/clear, ``cached()``, cleanup.

How the pieces combine
----------------------
* **Memory namespaces** live in Django's ``default`` cache, the *shared layer*, which is the only truth: Redis in
  production (``REDIS_URL``), the file-based cache under ``var/`` in the embedded mode, so every process on the
  machine sees the same values. There is deliberately no per-process copy of values: every hit has to touch the
  shared LRU order and every read has to see a ``clear`` made by another process at once, so a local copy would
  still need a round trip and would only save the transfer of the value. What stays per process is what cannot
  be shared: the compute-once locks of the embedded mode and the batch of pending statistics.
* Every namespace has a **generation** in the shared layer; value and bookkeeping keys carry it. ``clear`` moves
  the generation on, so no process can read a value of before the clear, then deletes the old keys.
* **LRU at max_size**: in Redis a sorted set per namespace (score = last access) plus a sorted set of expiry
  times and a hash of sizes; eviction pops the oldest in one Lua script, so two writers never evict twice. In the
  embedded mode an ordered index per namespace is kept in the shared cache and changed under an ``flock`` on a
  file under ``CACHE_DIR/.locks``, which makes its read-modify-write safe across the processes of the machine
  (the file-based cache's own ``incr`` is not).
* **File namespaces** keep one blob per entry under ``CACHE_DIR/<directory>/`` and one ``CacheEntry`` row (§4.3).
  Blob names come from the sha256 of the key and of the content, never from user input. Writes go to a temporary
  file, are fsynced and renamed into place, then the row is written: a killed writer leaves at most an unreferenced
  temporary file, which reads as a miss and is removed by cleanup. Reads verify size and sha256 while streaming.
* **Statistics** are true across processes: atomic ``HINCRBY`` in Redis; in the embedded mode each process
  batches its counts and adds them to ``CacheStatistics`` rows with ``F()`` at most every
  ``cache_options.stats_flush_interval`` seconds and at exit, so figures seen by *another* process may lag by that
  interval; reading the statistics flushes the reading process's own batch first.
* **Compute once** (``cached()``): concurrent misses of one key compute once, under a lock. In Redis the lock is a
  key owned by a random token with a short time to live (``cache_options.lock_ttl``) that a thread of its holder
  renews while it computes: a holder killed mid-computation (SIGKILL, OOM) frees the key within that time to live,
  and a holder whose lock expired can neither renew nor release its successor's. In the embedded mode the lock is a
  lock of the process, gone with it; processes of the machine do not share it.
* **Keys** are the sha256 of the canonical JSON of ``{"namespace", "key"}`` (see ``cache_canonical_json``).
* **Values** are bytes (stored as they are) or JSON values (dict, list, str, int, float, bool, None; they come
  back as JSON does: tuples as lists). Anything else is refused with ``ValidationFailed`` and nothing is stored.
  Above ``compress_threshold`` bytes a value is gzip-compressed (§7.3), transparently.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import decimal
import fcntl
import functools
import gzip
import hashlib
import inspect
import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
import weakref
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, Literal, NamedTuple, ParamSpec, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import DatabaseError, connections, transaction
from django.db.models import Count, DateTimeField, F, Sum, Value
from django.db.models.functions import Greatest
from django.utils import timezone
from redis.exceptions import LockNotOwnedError, RedisError

from comicmem_site.memory_config import CacheNamespaceConfig
from memory_app.errors import NotFound, ValidationFailed
from memory_app.metrics import CACHE_LOOKUP_LATENCY
from memory_app.models import CacheEntry, CacheStatistics, CacheValueFormat, HistoryAction
from memory_app.services.history import history_record

logger = logging.getLogger("memory_app.cache")

CachePolicy = Literal["use", "refresh", "bypass"]
CACHE_POLICIES: tuple[str, ...] = ("use", "refresh", "bypass")
COUNTER_FIELDS: tuple[str, ...] = ("hits", "misses", "corrupted", "evictions")
_CHUNK = 1024 * 1024
# Formats whose bytes are compressed already: gzip would only spend CPU on them.
_PRECOMPRESSED_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "application/gzip"})
_SHARED_CACHE_ALIAS = "default"

# What an unreachable shared layer raises: Redis errors, and OSError from files (disk full, permissions).
SHARED_LAYER_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)

P = ParamSpec("P")
R = TypeVar("R")


# --- namespaces ---------------------------------------------------------------------------------------------


def cache_namespace_config(*, namespace: str) -> CacheNamespaceConfig:
    """The configuration of a namespace, or NotFound. Names come only from config, so never from a request."""
    namespaces = settings.MEMORY.cache
    if not isinstance(namespace, str) or namespace not in namespaces:
        raise NotFound(
            f"Cache namespace '{namespace}' does not exist.",
            details={"cache_type": str(namespace), "suggestion": f"Use one of: {', '.join(sorted(namespaces))}."},
        )
    return namespaces[namespace]


def cache_namespace_directory(*, namespace: str) -> Path:
    """``CACHE_DIR/<directory or namespace>``, resolved and checked to lie inside ``CACHE_DIR``."""
    config = cache_namespace_config(namespace=namespace)
    directory = _resolved_directory(str(settings.CACHE_DIR), config.directory or namespace)
    if directory is None:
        # The config validator refuses such a directory already; this guards a settings object built by hand.
        raise ValidationFailed(f"The directory of cache namespace '{namespace}' is outside the cache root.")
    return directory


@functools.lru_cache(maxsize=256)
def _resolved_directory(root_name: str, name: str) -> Path | None:
    # Resolving walks the path on disk; every file hit needs it, so it is done once per (root, name).
    root = Path(root_name).resolve()
    directory = (root / name).resolve()
    if directory == root or not directory.is_relative_to(root):
        return None
    return directory


# --- keys ---------------------------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """A JSON-ready form that is the same for equal inputs in any process and any Python 3 version.

    Decisions: an integral float equals the int (``1.0`` and ``1`` give one key, as in JSON itself), other
    floats use ``repr`` (shortest round-trip form, stable since Python 3.1); NaN and infinities are refused;
    ``True`` stays distinct from ``1``; tuples are lists; sets are sorted by their members' canonical JSON;
    mapping keys must be strings; bytes become their sha256; aware datetimes become UTC ISO 8601 (naive ones
    are refused: their instant is unknown); dates, times, Decimals and UUIDs are tagged so they never equal a
    string. Any other type is refused rather than turned into ``str()``.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"a cache key cannot hold the float {value!r}")
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return {"$float": repr(value)}
    if isinstance(value, dict):
        result = {}
        for item_key, item in value.items():
            if not isinstance(item_key, str):
                raise TypeError(f"a cache key's mapping keys must be strings, not {type(item_key).__name__}")
            result[item_key] = _canonical(item)
        return result
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, set | frozenset):
        members = [_canonical(item) for item in value]
        return {"$set": sorted(members, key=lambda member: json.dumps(member, sort_keys=True, ensure_ascii=False))}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise TypeError("a cache key cannot hold a naive datetime: give it a time zone")
        return {"$datetime": value.astimezone(dt.UTC).isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise TypeError(f"a cache key cannot hold the Decimal {value}")
        return {"$decimal": str(value.normalize())}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    raise TypeError(f"a cache key cannot hold a value of type {type(value).__name__}")


def cache_canonical_json(value: Any) -> str:
    """Canonical JSON of a key (sorted keys, no spaces, UTF-8 text); TypeError names an unusable type."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(*, namespace: str, key: Any) -> str:
    """sha256 (hex) of the namespaced canonical key. ValidationFailed for a key that has no canonical form."""
    try:
        text = cache_canonical_json({"namespace": namespace, "key": key})
    except TypeError as exc:
        raise ValidationFailed(f"Unusable cache key: {exc}.", details={"fields": {"key": [str(exc)]}}) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- values -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    data: bytes
    value_format: str
    content_type: str


def _encode(value: Any, *, content_type: str | None) -> _Encoded:
    if isinstance(value, bytes | bytearray | memoryview):
        return _Encoded(bytes(value), CacheValueFormat.BYTES, content_type or "application/octet-stream")
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(
            f"The value cannot be cached: {exc}. Cache bytes or JSON values.",
            details={"fields": {"value": [str(exc)]}},
        ) from None
    return _Encoded(text.encode("utf-8"), CacheValueFormat.JSON, "application/json")


def _decode(data: bytes, value_format: str) -> Any:
    if value_format == CacheValueFormat.JSON:
        return json.loads(data.decode("utf-8"))
    return data


def _should_compress(size: int, content_type: str, threshold: int | None) -> bool:
    return threshold is not None and size > threshold and content_type not in _PRECOMPRESSED_TYPES


# A memory value is one bytes object: a flag byte, then the (maybe compressed) encoding.
_FLAG_JSON = 1
_FLAG_GZIP = 2


def _pack_memory_value(encoded: _Encoded, threshold: int | None) -> bytes:
    flags = _FLAG_JSON if encoded.value_format == CacheValueFormat.JSON else 0
    data = encoded.data
    if _should_compress(len(data), encoded.content_type, threshold):
        data = gzip.compress(data, mtime=0)
        flags |= _FLAG_GZIP
    return bytes([flags]) + data


def _unpack_memory_value(packed: bytes) -> Any:
    flags, data = packed[0], packed[1:]
    if flags & _FLAG_GZIP:
        data = gzip.decompress(data)
    return _decode(data, CacheValueFormat.JSON if flags & _FLAG_JSON else CacheValueFormat.BYTES)


def _expiry_seconds(config: CacheNamespaceConfig, ttl: int | None) -> int | None:
    """Seconds to live; None = no expiry. A ttl of 0 (in config or per call) means no expiry."""
    seconds = config.ttl if ttl is None else ttl
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
        raise ValidationFailed("ttl must be a whole number of seconds, 0 or more.", details={"fields": {"ttl": []}})
    return seconds or None


# --- statistics ---------------------------------------------------------------------------------------------


def _shared_cache() -> Any:
    return caches[_SHARED_CACHE_ALIAS]


def _uses_redis() -> bool:
    return isinstance(_shared_cache(), RedisCache)


def _redis_client() -> Any:
    # Django's RedisCache exposes its redis-py client through the backend client's get_client().
    return _shared_cache()._cache.get_client(write=True)


def _raw_key(name: str) -> str:
    # Our own Redis keys follow the cache's KEY_PREFIX and VERSION like every value key.
    return _shared_cache().make_key(name)


class _BatchedInProcess:
    """Notes batched in this process and written by the subclass's ``flush`` within ``stats_flush_interval``: from
    the next note once the interval is up, or from a timer, so a process that goes idle does not sit on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._timer: threading.Timer | None = None

    def _due_locked(self) -> bool:
        """Called with the lock held, after noting: True when the caller must flush now; otherwise a timer is armed."""
        options = settings.MEMORY.cache_options
        due = time.monotonic() - self._last_flush >= options.stats_flush_interval
        if not due and self._timer is None and options.stats_flush_in_background:
            self._timer = threading.Timer(options.stats_flush_interval, self._flush_in_background)
            self._timer.daemon = True
            self._timer.start()
        return due

    def _flush_in_background(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.flush()
        finally:
            # This thread's own database connections (Django keeps one per thread).
            connections.close_all()


class _DatabaseCounters(_BatchedInProcess):
    """Counters batched in this process and added to CacheStatistics rows with F() (embedded mode)."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, Counter[str]] = {}

    def add(self, namespace: str, **counts: int) -> None:
        with self._lock:
            self._pending.setdefault(namespace, Counter()).update(counts)
            due = self._due_locked()
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        for namespace, counts in pending.items():
            updates = {field: F(field) + amount for field, amount in counts.items() if amount}
            if not updates:
                continue
            try:
                # A savepoint: a failure here must not break a transaction the caller has open.
                with transaction.atomic():
                    CacheStatistics.objects.get_or_create(namespace=namespace)
                    CacheStatistics.objects.filter(namespace=namespace).update(**updates)
            except DatabaseError:
                # The database is away: keep the counts for the next flush rather than lose them.
                logger.warning("cache statistics of %s could not be saved; kept for the next flush", namespace)
                with self._lock:
                    self._pending.setdefault(namespace, Counter()).update(counts)

    def read(self, namespace: str) -> dict[str, int]:
        row = CacheStatistics.objects.filter(namespace=namespace).first()
        return {field: getattr(row, field, 0) if row else 0 for field in COUNTER_FIELDS}

    def discard(self) -> None:
        with self._lock:
            self._pending = {}


class _RedisCounters:
    """Atomic counters in one Redis hash per namespace (production)."""

    def add(self, namespace: str, **counts: int) -> None:
        pipe = _redis_client().pipeline(transaction=False)
        key = _raw_key(f"cmcache:stats:{namespace}")
        for field, amount in counts.items():
            if amount:
                pipe.hincrby(key, field, amount)
        pipe.execute()

    def flush(self) -> None:
        """Nothing is batched: every count is in Redis already."""

    def read(self, namespace: str) -> dict[str, int]:
        raw = _redis_client().hgetall(_raw_key(f"cmcache:stats:{namespace}"))
        values = {key.decode(): int(value) for key, value in raw.items()}
        return {field: values.get(field, 0) for field in COUNTER_FIELDS}


_database_counters = _DatabaseCounters()
_redis_counters = _RedisCounters()
atexit.register(_database_counters.flush)


def _counters() -> _DatabaseCounters | _RedisCounters:
    return _redis_counters if _uses_redis() else _database_counters


def cache_statistics_flush() -> None:
    """Write this process's pending counts (embedded mode; on Redis they are there already) and the hit counts and
    access times of the file entries it read."""
    _file_hits.flush()  # first: it hands its hit counts to the counters
    _database_counters.flush()


def cache_counters_read(*, namespace: str) -> dict[str, int]:
    return _counters().read(namespace)


def cache_process_state_reset() -> None:
    """Forget this process's pending counts and the generations it saw. For test isolation, where every test has
    its own database."""
    _database_counters.discard()
    _file_hits.discard()
    _RedisMemoryStore._seen_generations.clear()


# --- memory namespaces: the shared layer and its bookkeeping ------------------------------------------------


@dataclass(frozen=True)
class NamespaceUsage:
    entries: int
    bytes: int


class _RedisMemoryStore:
    """Values through Django's RedisCache; LRU, expiry and sizes in sorted sets and a hash beside them."""

    # Atomic: pop the least recently used members above the limit from all three structures.
    _EVICT = """
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return {} end
local members = redis.call('ZRANGE', KEYS[1], 0, excess - 1)
redis.call('ZREM', KEYS[1], unpack(members))
redis.call('ZREM', KEYS[2], unpack(members))
redis.call('HDEL', KEYS[3], unpack(members))
return members
"""
    _NO_EXPIRY = 1e15

    def _generation(self, namespace: str) -> int:
        raw = _redis_client().get(_raw_key(f"cmcache:{namespace}:generation"))
        return int(raw or 0)

    def _keys(self, namespace: str, generation: int) -> tuple[str, str, str]:
        # The braces make a hash tag: on a Redis cluster the three structures share one slot (Lua needs it).
        base = f"cmcache:{{{namespace}:{generation}}}"
        return _raw_key(f"{base}:lru"), _raw_key(f"{base}:exp"), _raw_key(f"{base}:sizes")

    @staticmethod
    def _value_key(namespace: str, generation: int, digest: str) -> str:
        return f"cmcache:{namespace}:{generation}:v:{digest}"

    def _forget(self, namespace: str, generation: int, digests: list[str]) -> None:
        if not digests:
            return
        lru, exp, sizes = self._keys(namespace, generation)
        pipe = _redis_client().pipeline(transaction=True)
        pipe.zrem(lru, *digests)
        pipe.zrem(exp, *digests)
        pipe.hdel(sizes, *digests)
        pipe.execute()
        _shared_cache().delete_many([self._value_key(namespace, generation, digest) for digest in digests])

    def get(self, namespace: str, digest: str) -> bytes | None:
        return self._get(namespace, digest, count=False)

    def lookup_counted(self, namespace: str, digest: str) -> bytes | None:
        """``get`` that also counts the hit or the miss in the namespace's statistics."""
        return self._get(namespace, digest, count=True)

    # The generation this process saw last, per namespace: a lookup reads the current one in the same round trip
    # as the value it guesses from it, and looks again only when a clear has moved it on meanwhile.
    _seen_generations: ClassVar[dict[str, int]] = {}

    def _get(self, namespace: str, digest: str, *, count: bool) -> bytes | None:
        generation = self._seen_generations.get(namespace, 0)
        lru, exp, _sizes = self._keys(namespace, generation)
        # The generation, the expiry, the value, the LRU touch and the hit's count in one round trip: a hit is the
        # hot path. Touching first is harmless: XX touches only a member that exists, and an expired or valueless
        # one is forgotten below. A miss takes its hit back and counts a miss (a second round trip, off the hot path).
        stats = _raw_key(f"cmcache:stats:{namespace}")
        pipe = _redis_client().pipeline(transaction=False)
        pipe.get(_raw_key(f"cmcache:{namespace}:generation"))
        pipe.zscore(exp, digest)
        pipe.get(_raw_key(self._value_key(namespace, generation, digest)))
        pipe.zadd(lru, {digest: time.time()}, xx=True)
        if count:
            pipe.hincrby(stats, "hits", 1)
        current, expires, raw, *_rest = pipe.execute()
        current = int(current or 0)
        if current != generation:
            # Cleared since this process last looked: what was read belongs to an older generation. Take the hit
            # back and look again in the current one.
            self._seen_generations[namespace] = current
            if count:
                _redis_client().hincrby(stats, "hits", -1)
            return self._get(namespace, digest, count=count)
        hit = expires is not None and expires > time.time() and raw is not None
        if not hit and count:
            correction = _redis_client().pipeline(transaction=False)
            correction.hincrby(stats, "hits", -1)
            correction.hincrby(stats, "misses", 1)
            correction.execute()
        if expires is None:
            return None
        if not hit:
            self._forget(namespace, generation, [digest])
            return None
        # Decoded exactly as Django's RedisCache.get decodes what RedisCache.set stored.
        return _shared_cache()._cache._serializer.loads(raw)

    def set(self, namespace: str, digest: str, packed: bytes, expiry: int | None, max_size: int | None) -> int:
        generation = self._generation(namespace)
        lru, exp, sizes = self._keys(namespace, generation)
        now = time.time()
        _shared_cache().set(self._value_key(namespace, generation, digest), packed, expiry)
        pipe = _redis_client().pipeline(transaction=True)
        pipe.zadd(lru, {digest: now})
        pipe.zadd(exp, {digest: now + expiry if expiry else self._NO_EXPIRY})
        pipe.hset(sizes, digest, len(packed))
        if expiry:
            # The bookkeeping outlives every value it describes, and then goes by itself: a writer that raced a
            # clear into the old generation leaves nothing behind for good.
            for structure in (lru, exp, sizes):
                pipe.expire(structure, expiry + 3600)
        pipe.execute()
        if max_size is None:
            return 0
        client = _redis_client()
        evicted = [member.decode() for member in client.eval(self._EVICT, 3, lru, exp, sizes, max_size)]
        _shared_cache().delete_many([self._value_key(namespace, generation, member) for member in evicted])
        return len(evicted)

    def delete(self, namespace: str, digest: str) -> bool:
        generation = self._generation(namespace)
        present = _redis_client().zscore(self._keys(namespace, generation)[1], digest) is not None
        self._forget(namespace, generation, [digest])
        return present

    def clear(self, namespace: str) -> int:
        client = _redis_client()
        # INCR first: from this instant every process reads and writes the new generation.
        old = client.incr(_raw_key(f"cmcache:{namespace}:generation")) - 1
        lru, exp, sizes = self._keys(namespace, old)
        live = client.zcount(exp, time.time(), "+inf")
        members = [member.decode() for member in client.zrange(lru, 0, -1)]
        _shared_cache().delete_many([self._value_key(namespace, old, member) for member in members])
        client.delete(lru, exp, sizes)
        return int(live)

    def purge_expired(self, namespace: str) -> tuple[int, int]:
        generation = self._generation(namespace)
        _lru, exp, sizes = self._keys(namespace, generation)
        client = _redis_client()
        expired = [member.decode() for member in client.zrangebyscore(exp, "-inf", time.time())]
        freed = sum(int(size or 0) for size in client.hmget(sizes, expired)) if expired else 0
        self._forget(namespace, generation, expired)
        return len(expired), freed

    def usage(self, namespace: str) -> NamespaceUsage:
        generation = self._generation(namespace)
        _lru, exp, sizes = self._keys(namespace, generation)
        client = _redis_client()
        live = client.zrangebyscore(exp, f"({time.time()}", "+inf")
        total = sum(int(size or 0) for size in client.hmget(sizes, live)) if live else 0
        return NamespaceUsage(entries=len(live), bytes=total)


class _LocalMemoryStore:
    """Values in Django's cache; an ordered LRU index per namespace beside them, changed under an flock.

    The index maps digest → [last access, expires at (or None), size] in LRU order (oldest first). A value
    whose digest is not in the index is not served, so a lost index (the file cache culls at MAX_ENTRIES)
    only costs misses, never a stale or cleared value.
    """

    _thread_lock = threading.RLock()

    @contextlib.contextmanager
    def _locked(self, namespace: str) -> Iterator[None]:
        directory = Path(settings.CACHE_DIR) / ".locks"
        directory.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(directory / f"{namespace}.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _generation(self, namespace: str) -> str:
        cache = _shared_cache()
        generation = cache.get(f"cmcache:{namespace}:generation")
        if generation is None:
            # A fresh token, never a counter from zero: a lost generation can only hide old values, not revive them.
            generation = uuid.uuid4().hex
            cache.set(f"cmcache:{namespace}:generation", generation, None)
        return generation

    @staticmethod
    def _index_key(namespace: str, generation: str) -> str:
        return f"cmcache:{namespace}:{generation}:index"

    @staticmethod
    def _value_key(namespace: str, generation: str, digest: str) -> str:
        return f"cmcache:{namespace}:{generation}:v:{digest}"

    def _drop(self, namespace: str, generation: str, index: dict[str, list[Any]], digests: Iterable[str]) -> None:
        digests = list(digests)
        for digest in digests:
            index.pop(digest, None)
        if digests:
            _shared_cache().delete_many([self._value_key(namespace, generation, digest) for digest in digests])

    def lookup_counted(self, namespace: str, digest: str) -> bytes | None:
        """``get`` that also counts the hit or the miss in the namespace's statistics."""
        packed = self.get(namespace, digest)
        _counters().add(namespace, hits=1 if packed is not None else 0, misses=0 if packed is not None else 1)
        return packed

    def get(self, namespace: str, digest: str) -> bytes | None:
        cache = _shared_cache()
        with self._locked(namespace):
            generation = self._generation(namespace)
            index = cache.get(self._index_key(namespace, generation)) or {}
            meta = index.get(digest)
            if meta is None:
                return None
            now = time.time()
            packed = (
                None
                if meta[1] is not None and meta[1] <= now
                else cache.get(self._value_key(namespace, generation, digest))
            )
            if packed is None:
                self._drop(namespace, generation, index, [digest])
            else:
                # Move to the most recently used end.
                index.pop(digest)
                index[digest] = [now, meta[1], meta[2]]
            cache.set(self._index_key(namespace, generation), index, None)
            return packed

    def set(self, namespace: str, digest: str, packed: bytes, expiry: int | None, max_size: int | None) -> int:
        cache = _shared_cache()
        with self._locked(namespace):
            generation = self._generation(namespace)
            index = cache.get(self._index_key(namespace, generation)) or {}
            now = time.time()
            cache.set(self._value_key(namespace, generation, digest), packed, expiry)
            index.pop(digest, None)
            index[digest] = [now, now + expiry if expiry else None, len(packed)]
            expired = [key for key, meta in index.items() if meta[1] is not None and meta[1] <= now]
            self._drop(namespace, generation, index, expired)
            evicted = list(index)[: max(0, len(index) - max_size)] if max_size else []
            self._drop(namespace, generation, index, evicted)
            cache.set(self._index_key(namespace, generation), index, None)
            return len(evicted)

    def delete(self, namespace: str, digest: str) -> bool:
        cache = _shared_cache()
        with self._locked(namespace):
            generation = self._generation(namespace)
            index = cache.get(self._index_key(namespace, generation)) or {}
            present = digest in index
            self._drop(namespace, generation, index, [digest])
            cache.set(self._index_key(namespace, generation), index, None)
            return present

    def clear(self, namespace: str) -> int:
        cache = _shared_cache()
        with self._locked(namespace):
            old = self._generation(namespace)
            cache.set(f"cmcache:{namespace}:generation", uuid.uuid4().hex, None)
            index = cache.get(self._index_key(namespace, old)) or {}
            now = time.time()
            live = sum(1 for meta in index.values() if meta[1] is None or meta[1] > now)
            self._drop(namespace, old, index, list(index))
            cache.delete(self._index_key(namespace, old))
            return live

    def purge_expired(self, namespace: str) -> tuple[int, int]:
        cache = _shared_cache()
        with self._locked(namespace):
            generation = self._generation(namespace)
            index = cache.get(self._index_key(namespace, generation)) or {}
            now = time.time()
            expired = {key: meta for key, meta in index.items() if meta[1] is not None and meta[1] <= now}
            self._drop(namespace, generation, index, expired)
            cache.set(self._index_key(namespace, generation), index, None)
            return len(expired), sum(meta[2] for meta in expired.values())

    def usage(self, namespace: str) -> NamespaceUsage:
        cache = _shared_cache()
        generation = cache.get(f"cmcache:{namespace}:generation")
        index = (cache.get(self._index_key(namespace, generation)) or {}) if generation else {}
        now = time.time()
        live = [meta for meta in index.values() if meta[1] is None or meta[1] > now]
        return NamespaceUsage(entries=len(live), bytes=sum(meta[2] for meta in live))


_redis_store = _RedisMemoryStore()
_local_store = _LocalMemoryStore()


def _memory_store() -> _RedisMemoryStore | _LocalMemoryStore:
    return _redis_store if _uses_redis() else _local_store


def cache_memory_usage(*, namespace: str) -> NamespaceUsage:
    return _memory_store().usage(namespace)


# --- file namespaces ----------------------------------------------------------------------------------------


def _blob_file(directory: Path, blob_name: str) -> str:
    """Where a blob lives, as a string: the hit path opens it without pathlib's joining (about 10 µs a hit)."""
    # Two hex digits of sharding keep directories small; blob names are hex digests, never user input.
    return os.path.join(directory, blob_name[:2], blob_name)


def _blob_path(directory: Path, blob_name: str) -> Path:
    return Path(_blob_file(directory, blob_name))


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _BlobWriter:
    """Writes chunks to a temporary file, gzip-compressing once they pass the threshold, then renames it."""

    def __init__(self, directory: Path, digest: str, content_type: str, threshold: int | None) -> None:
        self.directory = directory
        self.digest = digest
        self.content_type = content_type
        self.threshold = threshold
        self.compressed = False
        self.size = 0
        self.checksum = ""

    def _encoded(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        if self.threshold is None or self.content_type in _PRECOMPRESSED_TYPES:
            yield from chunks
            return
        head = bytearray()
        iterator = iter(chunks)
        for chunk in iterator:
            head += chunk
            if len(head) > self.threshold:
                break
        else:
            yield bytes(head)
            return
        self.compressed = True
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip stream (§7.3 uses gzip)
        yield compressor.compress(bytes(head))
        for chunk in iterator:
            yield compressor.compress(chunk)
        yield compressor.flush()

    def write(self, chunks: Iterable[bytes]) -> str:
        temporary_directory = self.directory / ".tmp"
        temporary_directory.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=temporary_directory, prefix=f"{self.digest[:16]}-")
        hasher = hashlib.sha256()
        try:
            with os.fdopen(descriptor, "wb") as handle:
                for piece in self._encoded(chunks):
                    if piece:
                        handle.write(piece)
                        hasher.update(piece)
                        self.size += len(piece)
                handle.flush()
                os.fsync(handle.fileno())
            self.checksum = hasher.hexdigest()
            blob_name = f"{self.digest}-{self.checksum[:16]}"
            final = _blob_path(self.directory, blob_name)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, final)
            _fsync_directory(final.parent)
            return blob_name
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def _chunks_of(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(_CHUNK):
        yield chunk


def _remove_blobs(directory: Path, blob_names: Iterable[str]) -> None:
    for blob_name in blob_names:
        with contextlib.suppress(FileNotFoundError):
            _blob_path(directory, blob_name).unlink()


class _FileHit(NamedTuple):
    """The columns of a live file entry that a read needs: the hit path builds no model instance."""

    pk: int
    blob_name: str
    size_bytes: int
    checksum: str
    compressed: bool
    value_format: str
    content_type: str


def _verified_open(directory: Path, entry: CacheEntry | _FileHit) -> IO[bytes] | None:
    """The blob opened and verified (size and sha256, read in chunks), rewound; None when missing or corrupted.

    The returned handle keeps reading the verified bytes even if the blob is replaced or removed meanwhile:
    blobs are never rewritten in place, only renamed over or unlinked.
    """
    try:
        handle = open(_blob_path(directory, entry.blob_name), "rb")  # noqa: SIM115 - returned to the caller
    except FileNotFoundError:
        return None
    hasher = hashlib.sha256()
    size = 0
    while chunk := handle.read(_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    if size != entry.size_bytes or hasher.hexdigest() != entry.checksum:
        handle.close()
        return None
    handle.seek(0)
    return handle


class _FileHitBookkeeping(_BatchedInProcess):
    """File-namespace hits, batched in this process like the embedded statistics: the namespace's ``hits`` counter
    and each entry's ``hit_count`` and ``last_accessed_at``.

    A hit only notes itself here, so a hit is one read of the database, no write (a write is a commit, which waits
    for the disk) and no round trip to Redis. The notes are written within ``stats_flush_interval`` (from the next
    hit or a timer), before this process evicts by LRU, when the statistics are flushed (``cache_statistics_flush``,
    which every reader of the statistics calls first) and at exit: the counters, then one UPDATE per entry hit
    since the last flush. ``last_accessed_at`` only moves forward, whichever process writes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[int, tuple[int, dt.datetime]] = {}
        self._hits: Counter[str] = Counter()

    def add(self, namespace: str, entry_id: int, accessed_at: dt.datetime) -> None:
        with self._lock:
            hits, _ = self._pending.get(entry_id, (0, accessed_at))
            self._pending[entry_id] = (hits + 1, accessed_at)
            self._hits[namespace] += 1
            due = self._due_locked()
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            namespace_hits, self._hits = self._hits, Counter()
            self._last_flush = time.monotonic()
        for namespace, hits in namespace_hits.items():
            _counters().add(namespace, hits=hits)
        if not pending:
            return
        try:
            # A savepoint: a failure here must not break a transaction the caller has open.
            with transaction.atomic():
                for entry_id, (hits, accessed_at) in sorted(pending.items()):
                    CacheEntry.objects.filter(pk=entry_id).update(
                        hit_count=F("hit_count") + hits,
                        last_accessed_at=Greatest(F("last_accessed_at"), Value(accessed_at, DateTimeField())),
                    )
        except DatabaseError:
            logger.warning("access times of %d cache entries could not be saved; kept for the next flush", len(pending))
            with self._lock:
                for entry_id, (hits, accessed_at) in pending.items():
                    newer_hits, newer_at = self._pending.get(entry_id, (0, accessed_at))
                    self._pending[entry_id] = (hits + newer_hits, max(accessed_at, newer_at))

    def discard(self) -> None:
        with self._lock:
            self._pending = {}
            self._hits = Counter()


_file_hits = _FileHitBookkeeping()
atexit.register(_file_hits.flush)


def _file_entry_hit(namespace: str, digest: str, now: dt.datetime) -> _FileHit | None:
    """The live entry of a key, or None. Once its blob verifies, the caller notes the hit (``_file_hits``).

    One plain SELECT of the columns a read needs, without the ORM's query building: the hit path is a read.
    """
    connection = connections[CacheEntry.objects.db]
    operations = connection.ops
    table = operations.quote_name(CacheEntry._meta.db_table)
    sql = (
        "SELECT id, blob_name, size_bytes, checksum, compressed, value_format, content_type "  # noqa: S608 - model
        f"FROM {table} WHERE namespace = %s AND key = %s AND (expires_at IS NULL OR expires_at > %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [namespace, digest, operations.adapt_datetimefield_value(now)])
        row = cursor.fetchone()
    if row is None:
        return None
    entry_id, blob_name, size_bytes, checksum, compressed, value_format, content_type = row
    return _FileHit(entry_id, blob_name, size_bytes, checksum, bool(compressed), value_format, content_type)


def _file_corrupted(namespace: str, directory: Path, entry: _FileHit) -> None:
    # Only the row that still names this blob goes: a concurrent rewrite of the key keeps its own.
    CacheEntry.objects.filter(pk=entry.pk, blob_name=entry.blob_name).delete()
    _remove_blobs(directory, [entry.blob_name])
    logger.warning("cache blob %s/%s is missing or corrupted; entry removed", namespace, entry.blob_name)
    _counters().add(namespace, misses=1, corrupted=1)


def _file_open(namespace: str, digest: str) -> tuple[_FileHit, IO[bytes]] | None:
    directory = cache_namespace_directory(namespace=namespace)
    now = timezone.now()
    entry = _file_entry_hit(namespace, digest, now)
    if entry is None:
        _counters().add(namespace, misses=1)
        return None
    handle = _verified_open(directory, entry)
    if handle is None:
        _file_corrupted(namespace, directory, entry)
        return None
    _file_hits.add(namespace, entry.pk, now)
    if entry.compressed:
        return entry, gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return entry, handle


_BlobRead = tuple[bytes, str]  # a blob's bytes and their sha256


def _read_and_hash(path: str, size: int) -> _BlobRead | None:
    """A blob's bytes and their sha256, None when it is gone. One read of the size a row names and one more byte:
    a longer blob is caught without a stat."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(size + 1)
    except FileNotFoundError:
        return None
    return data, hashlib.sha256(data).hexdigest()


class _SpeculativeBlobReads:
    """Reads a large blob on a helper thread while its entry's row is looked up, so a hit waits for the longer of
    the two, not for both.

    The blob to read is a guess: the one the key's last hit in this process read. The row decides: the guessed
    bytes are used only when the row names that very blob, and they are verified against the row's size and
    checksum like any other read; a wrong guess costs one wasted read. Reading a file and hashing it release the
    GIL, so the thread runs beside the database round trip. Small blobs are read inline: handing them to a thread
    costs more than reading them.
    """

    min_size = 256 * 1024
    capacity = 1024
    workers = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guesses: dict[tuple[str, str], tuple[str, int]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    def start(self, namespace: str, digest: str, directory: Path) -> tuple[str, Future[_BlobRead | None]] | None:
        """The guessed blob's name and its pending read, or None when there is nothing worth guessing."""
        guess = self._guesses.get((namespace, digest))
        if guess is None:
            return None
        blob_name, size = guess
        return blob_name, self._pool().submit(_read_and_hash, _blob_file(directory, blob_name), size)

    def remember(self, namespace: str, digest: str, entry: _FileHit) -> None:
        key = (namespace, digest)
        with self._lock:
            if entry.size_bytes < self.min_size:
                self._guesses.pop(key, None)
            else:
                if key not in self._guesses and len(self._guesses) >= self.capacity:
                    del self._guesses[next(iter(self._guesses))]  # the oldest guess
                self._guesses[key] = (entry.blob_name, entry.size_bytes)

    def forget(self, namespace: str, digest: str) -> None:
        with self._lock:
            self._guesses.pop((namespace, digest), None)

    def _pool(self) -> ThreadPoolExecutor:
        # A forked child (a Celery prefork worker) inherits the executor but none of its threads: it makes its own.
        if self._executor is None or self._pid != os.getpid():
            with self._lock:
                if self._executor is None or self._pid != os.getpid():
                    self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="comicmem-blob-read")
                    self._pid = os.getpid()
        return self._executor


_blob_reads = _SpeculativeBlobReads()


def _file_read(namespace: str, digest: str) -> tuple[_FileHit, bytes] | None:
    """The whole value of a file entry, verified while it is read: the blob is read once, not once to verify and
    again to return it (``cache_open`` streams instead, for values too large to hold). A large blob hit before in
    this process is read beside the row's lookup (``_SpeculativeBlobReads``)."""
    directory = cache_namespace_directory(namespace=namespace)
    now = timezone.now()
    speculative = _blob_reads.start(namespace, digest, directory)
    entry = _file_entry_hit(namespace, digest, now)
    if entry is None:
        _blob_reads.forget(namespace, digest)
        _counters().add(namespace, misses=1)
        return None
    if speculative is not None and speculative[0] == entry.blob_name:
        read = speculative[1].result()
    else:
        read = _read_and_hash(_blob_file(directory, entry.blob_name), entry.size_bytes)
    if read is None or len(read[0]) != entry.size_bytes or read[1] != entry.checksum:
        _blob_reads.forget(namespace, digest)
        _file_corrupted(namespace, directory, entry)
        return None
    _blob_reads.remember(namespace, digest, entry)
    _file_hits.add(namespace, entry.pk, now)
    data = read[0]
    return entry, gzip.decompress(data) if entry.compressed else data


def _file_store(
    namespace: str,
    config: CacheNamespaceConfig,
    digest: str,
    chunks: Iterable[bytes],
    *,
    content_type: str,
    value_format: str,
    expiry: int | None,
) -> bool:
    directory = cache_namespace_directory(namespace=namespace)
    writer = _BlobWriter(directory, digest, content_type, config.compress_threshold)
    blob_name = writer.write(chunks)
    if config.max_disk_usage is not None and writer.size > config.max_disk_usage:
        # Storing it would evict everything else and then itself: refuse, and say so in the log. (The blob is kept
        # only if a row written under an earlier, larger limit still names these very bytes.)
        if not CacheEntry.objects.filter(namespace=namespace, blob_name=blob_name).exists():
            _remove_blobs(directory, [blob_name])
        logger.info("value of %d bytes exceeds max_disk_usage of %s; not cached", writer.size, namespace)
        return False
    now = timezone.now()
    fields = {
        "blob_name": blob_name,
        "size_bytes": writer.size,
        "content_type": content_type,
        "value_format": value_format,
        "compressed": writer.compressed,
        "checksum": writer.checksum,
        "created_at": now,
        "expires_at": now + dt.timedelta(seconds=expiry) if expiry else None,
        "last_accessed_at": now,
        "hit_count": 0,
    }
    stale: list[str] = []
    with transaction.atomic():
        for _attempt in range(2):
            if _file_entry_insert(namespace, digest, fields):
                break
            # The key has a row already (an earlier value, or another process just stored it): overwrite it, under
            # its row lock, and unlink the blob it named once this commits.
            existing = CacheEntry.objects.select_for_update().filter(namespace=namespace, key=digest).first()
            if existing is not None:
                if existing.blob_name != blob_name:
                    stale.append(existing.blob_name)
                CacheEntry.objects.filter(pk=existing.pk).update(**fields)
                break
            # Removed between the two statements (a cleanup, a clear): insert it again.
        stale += _evict_file_entries(namespace, config, keep=digest)
    # Blobs go after the rows are committed. Inside a caller's transaction that later rolls back, a revived row
    # would find its blob gone: that reads as a miss (counted as corrupted) and the row is removed then.
    _remove_blobs(directory, stale)
    return True


def _file_entry_insert(namespace: str, digest: str, fields: dict[str, Any]) -> bool:
    """Insert the row of a key that has none, in one statement; False (nothing written) when the key has one.

    ``INSERT … ON CONFLICT DO NOTHING``: a key stored for the first time (the usual case) costs no read before
    the write, and a duplicate key neither raises nor spoils a caller's transaction.
    """
    connection = connections[CacheEntry.objects.db]
    operations = connection.ops
    values = {"namespace": namespace, "key": digest, **fields}
    model_fields = [CacheEntry._meta.get_field(name) for name in values]
    columns = ", ".join(operations.quote_name(field.column) for field in model_fields)
    conflict = ", ".join(
        operations.quote_name(CacheEntry._meta.get_field(name).column) for name in ("namespace", "key")
    )
    table = operations.quote_name(CacheEntry._meta.db_table)
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(model_fields))}) "  # noqa: S608 - model metadata
        f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {operations.quote_name(CacheEntry._meta.pk.column)}"
    )
    params = [
        field.get_db_prep_save(value, connection) for field, value in zip(model_fields, values.values(), strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def _evict_file_entries(namespace: str, config: CacheNamespaceConfig, *, keep: str) -> list[str]:
    """Delete least recently used rows until the namespace fits; returns their blob names (to unlink)."""
    _file_hits.flush()  # this process's recent hits count for "recently used"
    blob_names: list[str] = []
    entries = CacheEntry.objects.filter(namespace=namespace)
    if config.max_size is None and config.max_disk_usage is None:
        return blob_names
    # Both figures the limits need, in one query.
    figures = entries.aggregate(count=Count("id"), total=Sum("size_bytes"))
    evicted_bytes = 0
    if config.max_size is not None:
        excess = figures["count"] - config.max_size
        if excess > 0:
            victims = list(
                entries.exclude(key=keep)
                .order_by("last_accessed_at", "id")
                .values_list("id", "blob_name", "size_bytes")[:excess]
            )
            CacheEntry.objects.filter(id__in=[victim[0] for victim in victims]).delete()
            blob_names += [victim[1] for victim in victims]
            evicted_bytes = sum(victim[2] for victim in victims)
    if config.max_disk_usage is not None:
        total = (figures["total"] or 0) - evicted_bytes
        while total > config.max_disk_usage:
            oldest = entries.exclude(key=keep).order_by("last_accessed_at", "id")
            batch = list(oldest.values_list("id", "blob_name", "size_bytes")[:100])
            if not batch:
                break
            victims = []
            for victim_id, blob_name, size in batch:
                victims.append(victim_id)
                blob_names.append(blob_name)
                total -= size
                if total <= config.max_disk_usage:
                    break
            CacheEntry.objects.filter(id__in=victims).delete()
    if blob_names:
        _counters().add(namespace, evictions=len(blob_names))
    return blob_names


def cache_file_read_verified(*, entry: CacheEntry, max_bytes: int) -> bytes | None:
    """The decoded bytes of one file entry if its blob verifies and is at most ``max_bytes``; for previews.

    Counts nothing in the statistics: looking at an entry in the admin is not a cache lookup.
    """
    if entry.size_bytes > max_bytes:
        return None
    handle = _verified_open(cache_namespace_directory(namespace=entry.namespace), entry)
    if handle is None:
        return None
    with handle:
        return gzip.GzipFile(fileobj=handle).read() if entry.compressed else handle.read()


# --- the public operations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheLookup:
    hit: bool
    value: Any = None


def cache_lookup(*, namespace: str, key: Any) -> CacheLookup:
    """Look a key up: a hit with its value, or a miss (expired, evicted, never set, or a corrupted blob)."""
    config = cache_namespace_config(namespace=namespace)
    started = time.perf_counter()
    try:
        return _lookup(namespace, config, key)
    finally:
        # Timed per namespace for the §9.1 avg_latency_ms and Prometheus (memory_app.metrics).
        CACHE_LOOKUP_LATENCY.labels(namespace).observe(time.perf_counter() - started)


def _lookup(namespace: str, config: CacheNamespaceConfig, key: Any) -> CacheLookup:
    digest = cache_key(namespace=namespace, key=key)
    if config.backend == "file":
        read = _file_read(namespace, digest)
        if read is None:
            return CacheLookup(hit=False)
        entry, data = read
        return CacheLookup(hit=True, value=_decode(data, entry.value_format))
    packed = _memory_store().lookup_counted(namespace, digest)
    if packed is None:
        return CacheLookup(hit=False)
    return CacheLookup(hit=True, value=_unpack_memory_value(packed))


def cache_get(*, namespace: str, key: Any, default: Any = None) -> Any:
    lookup = cache_lookup(namespace=namespace, key=key)
    return lookup.value if lookup.hit else default


def cache_open(*, namespace: str, key: Any) -> IO[bytes] | None:
    """A verified, readable handle on a file namespace's bytes value (None on a miss); the caller closes it.

    For large blobs (images): nothing is read into memory but one chunk at a time.
    """
    config = cache_namespace_config(namespace=namespace)
    if config.backend != "file":
        raise ValidationFailed(f"Cache namespace '{namespace}' keeps no files; use cache_get.")
    opened = _file_open(namespace, cache_key(namespace=namespace, key=key))
    return opened[1] if opened else None


def cache_set(*, namespace: str, key: Any, value: Any, ttl: int | None = None, content_type: str | None = None) -> bool:
    """Store a value (bytes or JSON). False when it cannot fit the namespace at all; ValidationFailed, with
    nothing stored, for a value or key that cannot be serialized."""
    return _store(namespace, cache_key(namespace=namespace, key=key), value, ttl=ttl, content_type=content_type)


def _store(namespace: str, digest: str, value: Any, *, ttl: int | None, content_type: str | None) -> bool:
    """``cache_set`` of a key already hashed (``cache_get_or_compute`` has its digest: no second hashing)."""
    config = cache_namespace_config(namespace=namespace)
    expiry = _expiry_seconds(config, ttl)
    encoded = _encode(value, content_type=content_type)
    if config.backend == "file":
        return _file_store(
            namespace,
            config,
            digest,
            [encoded.data],
            content_type=encoded.content_type,
            value_format=encoded.value_format,
            expiry=expiry,
        )
    evicted = _memory_store().set(
        namespace, digest, _pack_memory_value(encoded, config.compress_threshold), expiry, config.max_size
    )
    if evicted:
        _counters().add(namespace, evictions=evicted)
    return True


def cache_set_stream(*, namespace: str, key: Any, source: IO[bytes], content_type: str, ttl: int | None = None) -> bool:
    """Store bytes read from ``source`` chunk by chunk into a file namespace (large images)."""
    config = cache_namespace_config(namespace=namespace)
    if config.backend != "file":
        raise ValidationFailed(f"Cache namespace '{namespace}' keeps no files; use cache_set.")
    digest = cache_key(namespace=namespace, key=key)
    return _file_store(
        namespace,
        config,
        digest,
        _chunks_of(source),
        content_type=content_type,
        value_format=CacheValueFormat.BYTES,
        expiry=_expiry_seconds(config, ttl),
    )


def cache_delete(*, namespace: str, key: Any) -> bool:
    config = cache_namespace_config(namespace=namespace)
    digest = cache_key(namespace=namespace, key=key)
    if config.backend == "file":
        entry = CacheEntry.objects.filter(namespace=namespace, key=digest).first()
        if entry is None:
            return False
        CacheEntry.objects.filter(pk=entry.pk).delete()
        _remove_blobs(cache_namespace_directory(namespace=namespace), [entry.blob_name])
        return True
    return _memory_store().delete(namespace, digest)


def cache_clear(*, namespace: str, user: AbstractBaseUser | None = None) -> int:
    """Empty one namespace everywhere and record ``cache_cleared``; returns how many live entries it held."""
    config = cache_namespace_config(namespace=namespace)
    if config.backend == "file":
        directory = cache_namespace_directory(namespace=namespace)
        removed = 0
        while True:
            rows = CacheEntry.objects.filter(namespace=namespace).values_list("id", "blob_name", "expires_at")
            batch = list(rows[:500])
            if not batch:
                break
            CacheEntry.objects.filter(id__in=[row[0] for row in batch]).delete()
            _remove_blobs(directory, [row[1] for row in batch])
            now = timezone.now()
            removed += sum(1 for row in batch if row[2] is None or row[2] > now)
    else:
        removed = _memory_store().clear(namespace)
    history_record(
        project=None,
        action=HistoryAction.CACHE_CLEARED,
        user=user,
        summary=f"Cache '{namespace}' cleared.",
        details={"cache_type": namespace, "backend": config.backend, "entries_removed": removed},
    )
    return removed


# --- compute once: cached() -----------------------------------------------------------------------------------

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
            return lookup.value
    with _compute_lock(namespace, digest):
        if policy == "use":
            # Someone may have computed it while we waited for the lock. Read without counting a second miss.
            lookup = _shielded(namespace, lambda: _peek(namespace, key), CacheLookup(hit=False))
            if lookup.hit:
                return lookup.value
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
                policy=policy,  # type: ignore[arg-type]
                ttl=ttl,
                content_type=content_type,
            )

        return wrapper

    return decorate


# --- cleanup ------------------------------------------------------------------------------------------------


@dataclass
class CacheCleanupReport:
    expired_entries: int = 0
    orphaned_blobs: int = 0
    temporary_files: int = 0
    bytes_freed: int = 0
    more: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _older_than_grace(path: Path, grace: int) -> bool:
    try:
        return time.time() - path.stat().st_mtime >= grace
    except FileNotFoundError:
        return False


def _cleanup_file_namespace(
    namespace: str, report: CacheCleanupReport, batch_size: int, max_batches: int | None
) -> None:
    directory = cache_namespace_directory(namespace=namespace)
    batches = 0
    while max_batches is None or batches < max_batches:
        batch = list(
            CacheEntry.objects.filter(namespace=namespace, expires_at__lte=timezone.now()).values_list(
                "id", "blob_name", "size_bytes"
            )[:batch_size]
        )
        if not batch:
            break
        CacheEntry.objects.filter(id__in=[row[0] for row in batch]).delete()
        _remove_blobs(directory, [row[1] for row in batch])
        report.expired_entries += len(batch)
        report.bytes_freed += sum(row[2] for row in batch)
        batches += 1
    else:
        report.more = (
            report.more or CacheEntry.objects.filter(namespace=namespace, expires_at__lte=timezone.now()).exists()
        )
    if not directory.is_dir():
        return
    grace = settings.MEMORY.cache_options.orphan_grace_seconds
    temporary_directory = directory / ".tmp"
    if temporary_directory.is_dir():
        for temporary in temporary_directory.iterdir():
            if _older_than_grace(temporary, grace):
                size = temporary.stat().st_size
                temporary.unlink(missing_ok=True)
                report.temporary_files += 1
                report.bytes_freed += size
    # A blob without a row: its row was evicted or rolled back, or its writer died between rename and insert.
    # Young ones may belong to a write in progress, so the same grace applies.
    for shard in directory.iterdir():
        if not shard.is_dir() or shard.name == ".tmp":
            continue
        names = [path.name for path in shard.iterdir()]
        for start in range(0, len(names), batch_size):
            chunk = names[start : start + batch_size]
            known = set(
                CacheEntry.objects.filter(namespace=namespace, blob_name__in=chunk).values_list("blob_name", flat=True)
            )
            for name in chunk:
                path = shard / name
                if name not in known and _older_than_grace(path, grace):
                    size = path.stat().st_size
                    path.unlink(missing_ok=True)
                    report.orphaned_blobs += 1
                    report.bytes_freed += size


def cache_cleanup(*, batch_size: int | None = None, max_batches: int | None = None) -> CacheCleanupReport:
    """Remove expired entries (in batches of ``batch_size``) and orphaned blobs and temporary files.

    With ``max_batches``, stops after that many batches of expired rows per namespace and says in ``more``
    whether some are left (the scheduled task re-queues itself then).
    """
    batch_size = batch_size or settings.MEMORY.cache_options.cleanup_batch_size
    report = CacheCleanupReport()
    for namespace, config in settings.MEMORY.cache.items():
        if config.backend == "file":
            _cleanup_file_namespace(namespace, report, batch_size, max_batches)
        else:
            expired, freed = _memory_store().purge_expired(namespace)
            report.expired_entries += expired
            report.bytes_freed += freed
    cache_statistics_flush()
    return report
