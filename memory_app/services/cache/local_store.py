"""The local store of memory namespaces (embedded mode): values in Django's file-based cache and an ordered LRU index
per namespace beside them, changed under an ``flock`` so the processes of the machine share it safely. The names of
the generation and the index, and the usage figures, are ``memory_app.cache_store``'s."""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from memory_app.cache_store import generation_name, local_index_name
from memory_app.services.cache.counters import _counters
from memory_app.services.cache.shared import _shared_cache


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
        generation: str | None = cache.get(generation_name(namespace))
        if generation is None:
            # A fresh token, never a counter from zero: a lost generation can only hide old values, not revive them.
            generation = uuid.uuid4().hex
            cache.set(generation_name(namespace), generation, None)
        return generation

    @staticmethod
    def _index_key(namespace: str, generation: str) -> str:
        return local_index_name(namespace, generation)

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
            cache.set(generation_name(namespace), uuid.uuid4().hex, None)
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
