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
* **File namespaces** keep one blob per entry in the ``cache`` Django storage (``memory_app.blob_storage``): files
  under ``CACHE_DIR/<directory>/`` in the embedded mode, the ``cache/<directory>/`` prefix of an S3-compatible
  bucket shared by every host in production; and one ``CacheEntry`` row (§4.3), the only thing that says which
  blob holds a key. Blob names come from the sha256 of the key and of the content, never from user input, so
  writers on different hosts never clash: two that store the same value write the same name with the same bytes.
  A writer stages the value in a local temporary file under ``CACHE_DIR/<directory>/.tmp``, fsyncs and hashes it,
  saves it under its name (a local storage renames it into place, fsyncing the folder; an object store uploads it
  in one PUT), and only then writes the row: a killed writer leaves at most a temporary file or an unreferenced
  blob, which read as a miss and are removed by cleanup after ``orphan_grace_seconds``. Reads verify size and
  sha256 while streaming. What holds across hosts is decided by the database (``INSERT … ON CONFLICT``, the row
  lock of an overwrite), never by a lock on a local file.
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

Where each piece lives, from the bottom of the stack to the top (a module imports only modules above it in this
list): ``namespaces``, ``keys``, ``values``, ``shared`` (the shared layer, named from ``memory_app.cache_store``,
which the selectors read too), ``counters``, ``redis_store``, ``local_store``, ``memory`` (which store), ``blobs``
(blob I/O), ``hits`` (hit bookkeeping), ``files`` (file entries), ``reads`` (whole reads, the speculative read),
``statistics``, ``operations`` (the public operations), ``compute`` (compute once, ``cached()``), ``cleanup``.
The ``flock`` of the embedded memory namespaces guards one machine's processes only, which is all the embedded
mode has; with Redis (production) it is not used.
Callers import from this package, not from its modules.
"""

from memory_app.cache_store import COUNTER_FIELDS
from memory_app.services.cache.cleanup import CacheCleanupReport, cache_cleanup
from memory_app.services.cache.compute import CACHE_POLICIES, CachePolicy, cache_get_or_compute, cached
from memory_app.services.cache.files import cache_file_read_verified
from memory_app.services.cache.keys import cache_canonical_json, cache_key
from memory_app.services.cache.memory import cache_memory_usage
from memory_app.services.cache.namespaces import (
    cache_namespace_config,
    cache_namespace_directory,
    cache_namespace_location,
)
from memory_app.services.cache.operations import (
    CacheLookup,
    cache_clear,
    cache_delete,
    cache_get,
    cache_lookup,
    cache_open,
    cache_set,
    cache_set_stream,
)
from memory_app.services.cache.shared import SHARED_LAYER_ERRORS, NamespaceUsage
from memory_app.services.cache.statistics import (
    cache_counters_all,
    cache_counters_read,
    cache_process_state_reset,
    cache_statistics_flush,
)

__all__ = [
    "CACHE_POLICIES",
    "COUNTER_FIELDS",
    "SHARED_LAYER_ERRORS",
    "CacheCleanupReport",
    "CacheLookup",
    "CachePolicy",
    "NamespaceUsage",
    "cache_canonical_json",
    "cache_cleanup",
    "cache_clear",
    "cache_counters_all",
    "cache_counters_read",
    "cache_delete",
    "cache_file_read_verified",
    "cache_get",
    "cache_get_or_compute",
    "cache_key",
    "cache_lookup",
    "cache_memory_usage",
    "cache_namespace_config",
    "cache_namespace_directory",
    "cache_namespace_location",
    "cache_open",
    "cache_process_state_reset",
    "cache_set",
    "cache_set_stream",
    "cache_statistics_flush",
    "cached",
]
