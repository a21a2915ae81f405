"""The beat schedules derived from memory_config.yaml, brought in line with it every time beat starts and after
``migrate`` (``schedules_sync``): the configuration wins over an interval edited in the admin.

What the admin still decides: whether a schedule is enabled (a row switched off stays off) and any schedule of
its own (rows with other names are never touched). One cache-cleanup schedule per cache namespace, at that
namespace's ``cleanup_interval``; a namespace removed from the configuration loses its schedule.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

logger = logging.getLogger("memory_app.schedules")

CACHE_CLEANUP_PREFIX = "cache-cleanup-"
# The one cleanup schedule of every namespace that migration 0008 made; replaced by one per namespace.
LEGACY_CACHE_CLEANUP = "cache-cleanup"


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    every: int
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def schedules_from_config() -> list[Schedule]:
    """Every schedule the configuration implies, with the key each interval comes from in its description."""
    memory = settings.MEMORY
    schedules = [
        Schedule(
            f"{CACHE_CLEANUP_PREFIX}{namespace}",
            "memory_app.cache_cleanup",
            config.cleanup_interval,
            f"Expired entries and orphaned blobs of cache namespace {namespace} (cache.{namespace}.cleanup_interval).",
            {"namespace": namespace},
        )
        for namespace, config in memory.cache.items()
    ]
    schedules += [
        Schedule(
            "history-archive",
            "memory_app.history_archive",
            memory.history.archive_interval_seconds,
            "History retention and archiving (history.archive_interval_seconds).",
        ),
        Schedule(
            "contexts-release",
            "memory_app.contexts_release",
            memory.conversation.release_interval_seconds,
            "Release of inactive contexts (conversation.release_interval_seconds).",
        ),
        Schedule(
            "memory-optimize",
            "memory_app.memory_optimize",
            memory.maintenance.optimize_interval_seconds,
            "Memory optimizer above monitoring.memory_threshold (maintenance.optimize_interval_seconds).",
        ),
        Schedule(
            "metrics-snapshot",
            "memory_app.metrics_snapshot",
            memory.monitoring.snapshot_interval_seconds,
            "Metric snapshots for the usage analysis (monitoring.snapshot_interval_seconds).",
        ),
        Schedule(
            "integrity-check",
            "memory_app.integrity_check",
            memory.maintenance.integrity_interval_seconds,
            "Integrity check (maintenance.integrity_interval_seconds).",
        ),
        Schedule(
            "memory-backup",
            "memory_app.backup",
            memory.workflow.backup_interval,
            "Verified backup of the memory when workflow.auto_backup is on (workflow.backup_interval).",
        ),
        Schedule(
            "workflows-recover",
            "workflows.recover",
            memory.workflow.recovery_interval,
            "Re-enqueue workflow units whose lease expired (workflow.recovery_interval).",
        ),
        Schedule(
            "workflows-detect-stuck",
            "workflows.detect_stuck",
            memory.maintenance.stuck_check_interval_seconds,
            "Flag (and optionally resume) stuck workflow runs (maintenance.stuck_check_interval_seconds).",
        ),
        Schedule(
            "storage-deletions-sweep",
            "memory_app.storage_deletions_sweep",
            memory.maintenance.storage_deletion_sweep_interval_seconds,
            "Send again file deletions a dead worker left (maintenance.storage_deletion_sweep_interval_seconds).",
        ),
        Schedule(
            "outputs-expire",
            "memory_app.outputs_expire",
            memory.pipelines.output_expiry_interval_seconds,
            "Remove run outputs past pipelines.output_retention_days (pipelines.output_expiry_interval_seconds).",
        ),
        Schedule(
            "webhook-deliveries-sweep",
            "memory_app.webhook_deliveries_sweep",
            memory.webhooks.sweep_interval_seconds,
            "Send again webhook messages whose send was lost, delete finished ones past webhooks.retention_days "
            "(webhooks.sweep_interval_seconds).",
        ),
        Schedule(
            "events-cleanup",
            "memory_app.events_cleanup",
            memory.events.cleanup_interval_seconds,
            "Delete live events older than events.retention_days (events.cleanup_interval_seconds).",
        ),
    ]
    return schedules


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def schedules_sync() -> SyncReport:
    """Make the beat rows match the configuration: create missing ones, set task, interval and arguments of the
    existing ones, remove the cache-cleanup rows of namespaces no longer configured. Tells a running beat."""
    report = SyncReport()
    wanted = schedules_from_config()
    names = {schedule.name for schedule in wanted}
    with transaction.atomic():
        for schedule in wanted:
            interval, _ = IntervalSchedule.objects.get_or_create(every=schedule.every, period=IntervalSchedule.SECONDS)
            kwargs = json.dumps(schedule.kwargs, sort_keys=True)
            row = PeriodicTask.objects.filter(name=schedule.name).first()
            if row is None:
                PeriodicTask.objects.create(
                    name=schedule.name,
                    task=schedule.task,
                    interval=interval,
                    kwargs=kwargs,
                    description=schedule.description,
                    enabled=True,
                )
                report.created.append(schedule.name)
                continue
            current = (row.task, row.interval_id, row.crontab_id, row.solar_id, row.clocked_id, row.kwargs)
            if current != (schedule.task, interval.pk, None, None, None, kwargs):
                # A plain update: the model's save() would also reset the row's run bookkeeping for nothing.
                PeriodicTask.objects.filter(pk=row.pk).update(
                    task=schedule.task,
                    interval=interval,
                    crontab=None,
                    solar=None,
                    clocked=None,
                    kwargs=kwargs,
                    description=schedule.description,
                )
                report.updated.append(schedule.name)
        stale = PeriodicTask.objects.filter(name__startswith=CACHE_CLEANUP_PREFIX).exclude(name__in=names)
        stale_names = list(stale.values_list("name", flat=True))
        legacy = list(PeriodicTask.objects.filter(name=LEGACY_CACHE_CLEANUP).values_list("name", flat=True))
        PeriodicTask.objects.filter(name__in=stale_names + legacy).delete()
        report.removed = sorted(stale_names + legacy)
        if report.changed:
            # Tell a running beat that its schedule changed.
            PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})
    if report.changed:
        logger.info(
            "beat schedules follow the configuration: created %s, updated %s, removed %s",
            report.created,
            report.updated,
            report.removed,
        )
    return report
