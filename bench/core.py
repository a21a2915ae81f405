"""What every benchmark shares: the result row, timing, the environment of the processes the benchmark starts."""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where the figures, logs and the benchmark's own embedded state go; the smoke test points it at a tmp folder.
BENCH_DIR = Path(os.environ.get("COMICMEM_BENCH_DIR", str(REPO_ROOT / "var" / "bench"))).resolve()


@dataclass
class Result:
    """One line of the table: ``ratio`` = measured / baseline, judged against ``limit`` by ``comparison``."""

    target: str
    name: str
    measured: float
    baseline: float
    unit: str
    baseline_name: str
    ratio: float
    limit: float
    comparison: str  # "<=" or ">="
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        if not math.isfinite(self.ratio):
            return False
        return self.ratio <= self.limit if self.comparison == "<=" else self.ratio >= self.limit

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def result(
    *,
    target: str,
    name: str,
    measured: float,
    baseline: float,
    unit: str,
    baseline_name: str,
    limit: float,
    comparison: str,
    ratio: float | None = None,
    **extra: Any,
) -> Result:
    if ratio is None:
        ratio = measured / baseline if baseline > 0 else math.inf
    return Result(target, name, measured, baseline, unit, baseline_name, ratio, limit, comparison, extra)


@dataclass(frozen=True)
class Sizes:
    """Everything a run's duration depends on; the smoke sizes run in seconds on SQLite alone."""

    http_seconds: float
    http_connections: int
    history_sizes: tuple[int, ...]
    history_appends: int
    reference_repeats: int
    api_repeats: int
    cache_repeats: int
    file_blob_sizes: tuple[int, ...]
    workflow_chains: int
    fanout_segments: int
    fanout_image_seconds: float
    fanout_concurrency: int
    fanout_runs: int
    memory_contexts: tuple[int, int]
    memory_messages: int
    search_messages: int
    search_queries: int
    search_appends: int
    vector_scans: tuple[tuple[int, int], ...]  # (candidates, dimensions) of the exact vector scan
    vector_repeats: int
    peer_chains: int
    scale_panels: int
    scale_history_sizes: tuple[int, ...]


FULL = Sizes(
    http_seconds=10.0,
    http_connections=8,
    history_sizes=(0, 10_000, 100_000, 1_000_000),
    history_appends=300,
    reference_repeats=3,
    api_repeats=60,
    cache_repeats=2_000,
    file_blob_sizes=(1 << 20, 10 << 20),
    workflow_chains=3,
    fanout_segments=25,
    fanout_image_seconds=0.2,
    fanout_concurrency=4,
    fanout_runs=3,
    memory_contexts=(1_000, 10_000),
    memory_messages=20,
    search_messages=1_000_000,
    search_queries=300,
    search_appends=300,
    vector_scans=((1_000, 1536), (10_000, 256)),  # larger scans: docs/recall-embeddings.md (minutes each)
    vector_repeats=10,
    peer_chains=10,
    scale_panels=200,
    scale_history_sizes=(1_000_000, 3_000_000, 10_000_000),
)
SMOKE = Sizes(
    http_seconds=0.5,
    http_connections=2,
    history_sizes=(0, 100, 1_000),
    history_appends=20,
    reference_repeats=1,
    api_repeats=3,
    cache_repeats=20,
    file_blob_sizes=(64 << 10,),
    workflow_chains=1,
    fanout_segments=4,
    fanout_image_seconds=0.01,
    fanout_concurrency=2,
    fanout_runs=1,
    memory_contexts=(10, 30),
    memory_messages=5,
    search_messages=2_000,
    search_queries=20,
    search_appends=20,
    vector_scans=((200, 64),),
    vector_repeats=3,
    peer_chains=1,
    scale_panels=8,
    scale_history_sizes=(1_000, 3_000, 10_000),
)


def timed(function: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds per call, one sample per call."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return samples


def timed_pair(first: Callable[[], Any], second: Callable[[], Any], repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per call of two functions, called in turn: a ratio of their medians is not skewed by the machine
    getting slower or faster between two separate series (another process, the CPU's clock, the page cache)."""
    first_samples, second_samples = [], []
    for _ in range(repeats):
        for function, samples in ((first, first_samples), (second, second_samples)):
            start = time.perf_counter()
            function()
            samples.append(time.perf_counter() - start)
    return first_samples, second_samples


def timed_blocks(
    first: Callable[[], Any], second: Callable[[], Any], repeats: int, block: int = 20
) -> tuple[list[float], list[float], list[float]]:
    """``timed_pair``, with one ratio of medians per block of ``block`` pairs. The median of those ratios is what
    other work on the machine moves least: a burst of it that lands on a few blocks spoils those blocks' ratios,
    not the whole series'."""
    first_samples: list[float] = []
    second_samples: list[float] = []
    ratios: list[float] = []
    for low in range(0, repeats, block):
        firsts, seconds = timed_pair(first, second, min(block, repeats - low))
        first_samples += firsts
        second_samples += seconds
        ratios.append(statistics.median(firsts) / max(statistics.median(seconds), 1e-9))
    return first_samples, second_samples, ratios


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a process the benchmark starts: the same settings, database, broker and caches."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def python() -> str:
    return sys.executable
