"""The Redis store of memory namespaces: values through Django's RedisCache, LRU, expiry and sizes in sorted sets
and a hash beside them, a generation per namespace that ``clear`` moves on. The names of those structures and the
usage figures are ``memory_app.cache_store``'s."""

from __future__ import annotations

import time
from typing import ClassVar

from memory_app.cache_store import counters_key, generation_name, redis_generation, redis_structure_keys
from memory_app.services.cache.shared import _raw_key, _redis_client, _shared_cache


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
        return redis_generation(namespace)

    def _keys(self, namespace: str, generation: int) -> tuple[str, str, str]:
        return redis_structure_keys(namespace, generation)

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
        stats = counters_key(namespace)
        pipe = _redis_client().pipeline(transaction=False)
        pipe.get(_raw_key(generation_name(namespace)))
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
        value: bytes = _shared_cache()._cache._serializer.loads(raw)
        return value

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
        old = client.incr(_raw_key(generation_name(namespace))) - 1
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
