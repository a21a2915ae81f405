"""Read side of operations: the §9.1 metrics, the §9.2 usage analysis, and the figures behind /metrics."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from django.conf import settings
from django.db.models import Count, Max, Q
from django.utils import timezone

from comicmem_site.memory_config import ProviderConfig
from memory_app.cache_store import SHARED_LAYER_ERRORS, cache_counters_read_all, shared_layer_unavailable
from memory_app.errors import ServiceUnavailable
from memory_app.instruments import cache_lookup_latency
from memory_app.models import ConversationContext, HistoryRecord, MetricSnapshot, WorkflowState, WorkflowStatus
from memory_app.providers.embeddings import embeddings_endpoint
from memory_app.providers.fonts import font_report
from memory_app.providers.settings_check import provider_settings_problems
from memory_app.selectors.cache import cache_statistics_list, human_size
from memory_app.selectors.search_vectors import vector_backend, vectors_missing_count


def active_contexts_count() -> int:
    """Contexts written to within ``conversation.inactive_after_seconds``."""
    since = timezone.now() - dt.timedelta(seconds=settings.MEMORY.conversation.inactive_after_seconds)
    return ConversationContext.objects.filter(last_updated__gte=since).count()


def workflow_status_counts() -> dict[str, int]:
    counts = dict.fromkeys(WorkflowStatus.values, 0)
    for row in WorkflowState.objects.order_by().values("status").annotate(count=Count("pk")):
        counts[row["status"]] = row["count"]
    return counts


def workflows_stuck_count() -> int:
    return WorkflowState.objects.filter(status=WorkflowStatus.IN_PROGRESS, stuck_since__isnull=False).count()


def broker_queue_depths() -> dict[str, int]:
    """Messages waiting per queue: Redis LLEN (every priority list of the queue), or files in the folder queue."""
    broker_url: str = settings.CELERY_BROKER_URL
    queue = "celery"
    if broker_url.startswith("filesystem://"):
        folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]))
        # kombu names each message file <milliseconds>_<uuid>.<queue>.msg, all queues in one folder.
        depths = {queue: 0}
        for path in folder.glob("*.msg") if folder.is_dir() else []:
            name = path.name.removesuffix(".msg").split(".", 1)[-1]
            depths[name] = depths.get(name, 0) + 1
        return depths
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        try:
            client = redis.Redis.from_url(broker_url, socket_connect_timeout=1, socket_timeout=1)
            # kombu keeps priorities 1-9 in lists named "<queue>\x06\x16<priority>" next to "<queue>".
            names = [queue] + [f"{queue}\x06\x16{priority}" for priority in range(1, 10)]
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.llen(name)
            return {queue: int(sum(pipe.execute()))}
        except redis.RedisError:
            return {}
    return {}


def memory_usage() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {"total": memory.total, "used": memory.total - memory.available, "percentage": round(memory.percent, 1)}


def cache_performance() -> dict[str, dict[str, Any]]:
    """Per namespace: hit rate (percent, as in §9.1), average lookup latency on this machine, total lookups. The
    caller writes this process's pending counts first (``cache_statistics_flush``)."""
    latencies = cache_lookup_latency()
    try:
        counters = cache_counters_read_all()
    except SHARED_LAYER_ERRORS as exc:
        raise shared_layer_unavailable(exc) from None
    result = {}
    for namespace, counts in counters.items():
        total = counts["hits"] + counts["misses"]
        timed, seconds = latencies.get(namespace, (0.0, 0.0))
        result[namespace] = {
            "hit_rate": round(100 * counts["hits"] / total, 1) if total else 0.0,
            # The counts may have been reset (a clear) while this process's timings stay: no lookups, no latency.
            "avg_latency_ms": round(1000 * seconds / timed, 3) if timed and total else 0.0,
            "total_requests": total,
        }
    return result


def metrics_current() -> dict[str, Any]:
    """The §9.1 JSON. System-wide figures: the API shows them to staff only. The caller flushes first (see
    ``cache_performance``)."""
    return {
        "timestamp": timezone.now().isoformat(),
        "memory_usage": memory_usage(),
        "cache_performance": cache_performance(),
        "active_contexts": active_contexts_count(),
        "workflow_states": workflow_status_counts(),
    }


# --- §9.2 usage analysis, from stored snapshots --------------------------------------------------------------


def _lookup_deltas(snapshots: list[MetricSnapshot]) -> tuple[dict[str, dict[str, int]], dict[int, int]]:
    """Hits and misses per namespace and lookups per hour of day, summed over consecutive snapshot pairs.

    A counter that went down between two snapshots was reset (a Redis flush): that pair counts from zero.
    """
    per_namespace: dict[str, dict[str, int]] = defaultdict(lambda: {"hits": 0, "misses": 0})
    per_hour: dict[int, int] = defaultdict(int)
    for earlier, later in itertools.pairwise(snapshots):
        for namespace, figures in later.cache.items():
            before = earlier.cache.get(namespace, {})
            for field in ("hits", "misses"):
                now_value, then_value = int(figures.get(field, 0)), int(before.get(field, 0))
                delta = now_value - then_value if now_value >= then_value else now_value
                per_namespace[namespace][field] += delta
                per_hour[later.taken_at.astimezone(dt.UTC).hour] += delta
    return per_namespace, per_hour


def _recommendations(efficiency: dict[str, dict[str, Any]], latest: MetricSnapshot | None) -> list[dict[str, Any]]:
    monitoring = settings.MEMORY.monitoring
    advice: list[dict[str, Any]] = []
    for namespace, figures in sorted(efficiency.items()):
        config = settings.MEMORY.cache.get(namespace)
        if config is None or figures["lookups"] < monitoring.min_lookups_for_advice:
            continue
        if figures["hit_rate"] >= monitoring.low_hit_rate:
            continue
        size = (latest.cache.get(namespace, {}) if latest else {}).get("current_size", 0)
        evidence = {
            "hit_rate": figures["hit_rate"],
            "lookups": figures["lookups"],
            "threshold": monitoring.low_hit_rate,
            "ttl_seconds": config.ttl,
            "max_size": config.max_size,
            "current_size": size,
        }
        if config.max_size is not None and size >= config.max_size:
            # Full: entries are evicted before they are asked for again.
            suggestion = {
                "setting": f"cache.{namespace}.max_size",
                "current": config.max_size,
                "suggested": config.max_size * 2,
            }
            message = (
                f"{namespace}: hit rate {figures['hit_rate']:.0%} over {figures['lookups']} lookups with the "
                f"namespace full ({size}/{config.max_size}); double max_size to {config.max_size * 2}."
            )
        else:
            # Not full: entries expire before they are asked for again.
            suggested_ttl = max(config.ttl * 2, 60)
            suggestion = {"setting": f"cache.{namespace}.ttl", "current": config.ttl, "suggested": suggested_ttl}
            message = (
                f"{namespace}: hit rate {figures['hit_rate']:.0%} over {figures['lookups']} lookups with room left "
                f"({size}/{config.max_size or 'unbounded'}); entries expire first: raise ttl from {config.ttl} s "
                f"to {suggested_ttl} s."
            )
        advice.append(
            {"namespace": namespace, "kind": "low_hit_rate", "message": message, "evidence": evidence, **suggestion}
        )
    if latest is not None and latest.memory_percentage >= monitoring.memory_threshold * 100:
        advice.append(
            {
                "namespace": None,
                "kind": "memory_pressure",
                "message": (
                    f"Memory use was {latest.memory_percentage:.1f}% at the last snapshot, over the "
                    f"{monitoring.memory_threshold:.0%} threshold: the optimizer runs; consider more memory or "
                    "smaller max_size values."
                ),
                "evidence": {"memory_percentage": latest.memory_percentage, "threshold": monitoring.memory_threshold},
            }
        )
    return advice


def usage_analysis(*, hours: int = 24) -> dict[str, Any]:
    """The §9.2 patterns over the last ``hours`` of snapshots, with rule-based recommendations."""
    since = timezone.now() - dt.timedelta(hours=hours)
    snapshots = list(MetricSnapshot.objects.filter(taken_at__gte=since).order_by("taken_at"))
    per_namespace, per_hour = _lookup_deltas(snapshots)
    efficiency: dict[str, dict[str, Any]] = {}
    for namespace, counts in per_namespace.items():
        lookups = counts["hits"] + counts["misses"]
        efficiency[namespace] = {
            "hits": counts["hits"],
            "misses": counts["misses"],
            "lookups": lookups,
            "hit_rate": round(counts["hits"] / lookups, 4) if lookups else 0.0,
        }
    peak = sorted((hour for hour, count in per_hour.items() if count > 0), key=lambda hour: (-per_hour[hour], hour))
    namespaces = sorted(
        (
            {"namespace": name, "lookups": figures["lookups"]}
            for name, figures in efficiency.items()
            if figures["lookups"]
        ),
        key=lambda row: (-row["lookups"], row["namespace"]),
    )
    # The projects worked on most in the window: their history records are the trace of every layer's writes.
    # Public ids are per owner: each row names its owner too.
    projects = [
        {"project_id": row["project__public_id"], "owner": row["project__owner__username"], "actions": row["actions"]}
        for row in HistoryRecord.objects.filter(timestamp__gte=since, project__isnull=False)
        .order_by()
        .values("project_id", "project__public_id", "project__owner__username")
        .annotate(actions=Count("pk"))
        .order_by("-actions", "project__public_id", "project_id")[:5]
    ]
    latest = snapshots[-1] if snapshots else None
    return {
        "window_hours": hours,
        "snapshots": len(snapshots),
        "peak_usage_hours": [{"hour": hour, "lookups": per_hour[hour]} for hour in peak[:3]],
        "most_accessed_data": {"cache_namespaces": namespaces, "projects": projects},
        "cache_efficiency": efficiency,
        "recommendations": _recommendations(efficiency, latest),
        "generated_at": timezone.now().isoformat(),
    }


# --- §12.2 diagnose ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    check: str
    value: Any
    threshold: Any
    warning: bool
    message: str


def _provider_line(config: ProviderConfig) -> str:
    return (
        f"{config.provider} ({config.model} at {config.base_url})" if config.provider == "openai" else config.provider
    )


def workflows_silent_count() -> int:
    """In-progress runs with no progress (run or unit) for workflow.stuck_after_seconds, flagged or not."""
    limit = timezone.now() - dt.timedelta(seconds=settings.MEMORY.workflow.stuck_after_seconds)
    return (
        WorkflowState.objects.filter(status=WorkflowStatus.IN_PROGRESS, updated_at__lt=limit)
        .annotate(last_unit_update=Max("units__updated_at"))
        .filter(Q(last_unit_update__isnull=True) | Q(last_unit_update__lt=limit))
        .count()
    )


def diagnose() -> list[Finding]:
    """The seed's checks (§12.2) with its thresholds as warnings (configurable, same defaults). The caller writes
    this process's pending cache counts first (``cache_statistics_flush``)."""
    monitoring = settings.MEMORY.monitoring
    findings = []
    contexts = active_contexts_count()
    limit = settings.MEMORY.conversation.max_active_contexts
    findings.append(
        Finding("active_contexts", contexts, limit, contexts > limit, f"{contexts} active contexts (limit {limit}).")
    )
    try:
        statistics = cache_statistics_list()
    except ServiceUnavailable:
        findings.append(Finding("cache", None, None, True, "the shared cache is unreachable: no cache figures."))
        statistics = {}
    cache_bytes = sum(
        figures["memory_usage_bytes"] for figures in statistics.values() if figures["backend"] == "memory"
    )
    findings.append(
        Finding(
            "cache_memory",
            cache_bytes,
            monitoring.cache_memory_warning,
            cache_bytes > monitoring.cache_memory_warning,
            f"memory caches hold {human_size(cache_bytes)} "
            f"(warning above {human_size(monitoring.cache_memory_warning)}).",
        )
    )
    for namespace, figures in statistics.items():
        lookups = figures["hits"] + figures["misses"]
        judged = lookups >= monitoring.min_lookups_for_advice
        low = judged and figures["hit_rate_value"] < monitoring.low_hit_rate
        findings.append(
            Finding(
                f"hit_rate.{namespace}",
                figures["hit_rate_value"],
                monitoring.low_hit_rate,
                low,
                f"{namespace}: hit rate {figures['hit_rate']} over {lookups} lookups"
                + ("" if judged else f" (too few to judge, under {monitoring.min_lookups_for_advice})")
                + (": consider a longer ttl or a larger max_size." if low else "."),
            )
        )
        maximum = figures.get("max_disk_usage_bytes")
        if figures["backend"] == "file" and maximum:
            used = figures["disk_usage_bytes"]
            findings.append(
                Finding(
                    f"disk_usage.{namespace}",
                    used,
                    maximum,
                    used >= 0.9 * maximum,
                    f"{namespace}: {human_size(used)} on disk of max_disk_usage {human_size(maximum)} "
                    "(warning from 90%).",
                )
            )
    stuck = workflows_silent_count()
    findings.append(
        Finding(
            "stuck_runs",
            stuck,
            0,
            stuck > 0,
            f"{stuck} in_progress run(s) without progress for over {settings.MEMORY.workflow.stuck_after_seconds} s.",
        )
    )
    memory = memory_usage()
    threshold = monitoring.memory_threshold * 100
    findings.append(
        Finding(
            "memory_usage",
            memory["percentage"],
            threshold,
            memory["percentage"] > threshold,
            f"memory {memory['percentage']:.1f}% in use (threshold {threshold:.0f}%).",
        )
    )
    font = font_report()
    findings.append(Finding("font", font.path, None, not font.ok, f"lettering font: {font.message}"))
    findings.append(_embeddings_finding())
    problems = provider_settings_problems(settings.MEMORY)
    findings += [Finding(problem.setting, problem.level, None, True, problem.message) for problem in problems]
    if not problems:
        llm, image = settings.MEMORY.providers.llm, settings.MEMORY.providers.image
        findings.append(
            Finding(
                "providers",
                None,
                None,
                False,
                f"LLM provider {llm.provider}"
                + (f" ({llm.model} at {llm.base_url})" if llm.provider == "openai" else "")
                + f", image provider {image.provider}"
                + (f" ({image.model} at {image.base_url})" if image.provider == "openai" else "")
                + ": settings complete.",
            )
        )
    return findings


def _embeddings_finding() -> Finding:
    """Recall's meaning side: whether an endpoint is configured, which backend ranks vectors, how many indexed
    texts still lack one (``search_embed_backfill`` embeds them). Never a warning: lexical recall is complete."""
    endpoint = embeddings_endpoint()
    if endpoint is None:
        return Finding("embeddings", None, None, False, "not configured; recall is lexical only.")
    # The host alone: a base URL may carry credentials.
    parts = urlsplit(endpoint.base_url)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    missing = vectors_missing_count(model_key=endpoint.model_key)
    return Finding(
        "embeddings",
        missing,
        None,
        False,
        f"{endpoint.model_key} at {host}; vector backend {vector_backend()}; "
        f"{missing} indexed text(s) without a vector.",
    )
