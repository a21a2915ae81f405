"""Target 4: cache hits against the raw operations they wrap, on the same backend, and the statistics' cost."""

from __future__ import annotations

import hashlib
import os

from bench.core import BENCH_DIR, Result, Sizes, median, result, timed, timed_blocks, timed_pair


def run(*, sizes: Sizes) -> list[Result]:
    from django.conf import settings
    from django.core.cache import cache, caches

    from comicmem_site.memory_config import CacheNamespaceConfig
    from memory_app.services import cache as cache_service
    from memory_app.services.cache.counters import _counters

    settings.CACHE_DIR = BENCH_DIR / "cache"
    settings.MEMORY = settings.MEMORY.model_copy(
        update={
            "cache": {
                **settings.MEMORY.cache,
                "bench_memory": CacheNamespaceConfig(backend="memory", ttl=3600, max_size=1000),
                "bench_files": CacheNamespaceConfig(backend="file", ttl=3600, directory="bench_files"),
            }
        }
    )
    results = []
    # An API response of a realistic size (about 2 KB of JSON).
    value = {"choices": [{"message": {"role": "assistant", "content": "台词与场景描述。" * 60}}], "usage": {"n": 1}}
    cache_service.cache_set(namespace="bench_memory", key={"prompt": "bench"}, value=value)
    cache.set("bench-raw-value", value, 3600)
    assert cache_service.cache_get(namespace="bench_memory", key={"prompt": "bench"}) == value

    def ours() -> None:
        cache_service.cache_get(namespace="bench_memory", key={"prompt": "bench"})

    def raw() -> None:
        cache.get("bench-raw-value")

    for function in (ours, raw):  # warm both
        timed(function, 10)
    ours_samples, raw_samples = timed_pair(ours, raw, sizes.cache_repeats)
    ours_time, raw_time = median(ours_samples), median(raw_samples)
    counters = _counters()
    stats_time = median(timed(lambda: counters.add("bench_memory", hits=1), sizes.cache_repeats))
    backend = type(caches["default"]).__name__
    results.append(
        result(
            target="4",
            name=f"memory-namespace hit ({backend})",
            measured=ours_time * 1e6,
            baseline=raw_time * 1e6,
            unit="µs",
            baseline_name="raw django.core.cache get",
            limit=2.0,
            comparison="<=",
            statistics_us_per_call=round(stats_time * 1e6, 2),
            statistics_share_of_hit=round(stats_time / ours_time, 3),
        )
    )

    folder = BENCH_DIR / "raw_files"
    folder.mkdir(parents=True, exist_ok=True)
    for size in sizes.file_blob_sizes:
        blob = os.urandom(size)
        key = {"image": size}
        cache_service.cache_set(namespace="bench_files", key=key, value=blob, content_type="image/png")
        raw_path = folder / f"blob-{size}"
        raw_path.write_bytes(blob)
        assert cache_service.cache_get(namespace="bench_files", key=key) == blob

        def file_hit(key: dict = key) -> None:
            cache_service.cache_get(namespace="bench_files", key=key)

        def raw_read(path=raw_path) -> None:
            hashlib.sha256(path.read_bytes()).hexdigest()

        # Each series warms the page cache and the process (the helper thread, the database connection) first;
        # then blocks of alternating calls, and the median of the blocks' ratios (``timed_blocks``). A hit waits
        # for a PostgreSQL round trip that a raw read never does: on a machine busy with other work, each one
        # waits for the server process to be scheduled, which a burst of load turns into milliseconds.
        repeats = max(5, sizes.cache_repeats // (25 if size > (4 << 20) else 5))
        for function in (file_hit, raw_read):
            timed(function, 20)
        hit_samples, raw_samples, ratios = timed_blocks(file_hit, raw_read, repeats)
        hit_time, raw_time = median(hit_samples), median(raw_samples)
        results.append(
            result(
                target="4",
                name=f"file-namespace hit, {size / (1 << 20):g} MiB",
                measured=hit_time * 1000,
                baseline=raw_time * 1000,
                unit="ms",
                baseline_name="raw file read + sha256",
                ratio=median(ratios),
                limit=1.5,
                comparison="<=",
                block_ratios=[round(ratio, 3) for ratio in ratios],
                ratio_of_medians=round(hit_time / raw_time, 3),
            )
        )
    return results
