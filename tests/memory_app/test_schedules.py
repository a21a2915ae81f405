"""The maintenance schedules: beat rows made by a data migration, kept through beat starts; the task switches."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from pathlib import Path

import pytest

from comicmem_site.celery import app
from memory_app import tasks
from memory_app.models import CacheEntry, HistoryRecord, MetricSnapshot
from tests.factories import HistoryRecordFactory

pytestmark = pytest.mark.django_db

EXPECTED = {
    "cache-cleanup": ("memory_app.cache_cleanup", 300),
    "history-archive": ("memory_app.history_archive", 3600),
    "contexts-release": ("memory_app.contexts_release", 3600),
    "memory-optimize": ("memory_app.memory_optimize", 300),
    "metrics-snapshot": ("memory_app.metrics_snapshot", 300),
    "integrity-check": ("memory_app.integrity_check", 86400),
    "workflows-recover": ("workflows.recover", 10),
    "workflows-detect-stuck": ("workflows.detect_stuck", 300),
}


def set_memory(settings, section: str, **values) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(
        update={section: getattr(settings.MEMORY, section).model_copy(update=values)}
    )


def maintenance_migration():
    """The memory_app migration named *_maintenance_schedules, whatever its number (renumbered at merges)."""
    [path] = (Path(__file__).resolve().parents[2] / "memory_app" / "migrations").glob("*_maintenance_schedules.py")
    return importlib.import_module(f"memory_app.migrations.{path.stem}")


def migration_schedules() -> dict[str, tuple[str, int]]:
    module = maintenance_migration()
    return {name: (task, seconds) for name, task, seconds, _ in module._schedules()}


def test_the_migration_schedules_every_maintenance_task_at_its_configured_interval():
    # That the rows exist after a real `migrate` and survive a real beat start: tests/integration/test_beat.py.
    assert migration_schedules() == EXPECTED
    assert app.conf.beat_schedule == {}
    # Every scheduled name is a task a worker registers (as it does at start): a typo would only show when beat
    # fires it.
    app.autodiscover_tasks(["memory_app", "workflows"], force=True)
    assert {task for task, _ in EXPECTED.values()} <= set(app.tasks)


def test_the_first_intervals_follow_the_configuration(settings):
    set_memory(settings, "monitoring", snapshot_interval_seconds=120)
    set_memory(settings, "maintenance", integrity_interval_seconds=7200)

    schedules = migration_schedules()

    assert (schedules["metrics-snapshot"], schedules["integrity-check"]) == (
        ("memory_app.metrics_snapshot", 120),
        ("memory_app.integrity_check", 7200),
    )


def test_auto_cleanup_off_makes_the_cleanup_tasks_do_nothing_and_say_so(settings, project, caplog):
    set_memory(settings, "maintenance", auto_cleanup_enabled=False)
    old = HistoryRecordFactory(project=project, timestamp=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    skipped = {"skipped": True, "reason": "maintenance.auto_cleanup_enabled is false"}

    with caplog.at_level(logging.INFO, logger="memory_app.tasks"):
        assert tasks.cache_cleanup_task.apply().get() == skipped
        assert tasks.history_archive_task.apply().get() == skipped
        assert tasks.contexts_release_task.apply().get() == skipped

    assert HistoryRecord.objects.filter(pk=old.pk).exists()
    assert [record.getMessage() for record in caplog.records if record.name == "memory_app.tasks"] == [
        "cache cleanup skipped: maintenance.auto_cleanup_enabled is false",
        "history archive skipped: maintenance.auto_cleanup_enabled is false",
        "context release skipped: maintenance.auto_cleanup_enabled is false",
    ]


def test_monitoring_off_stops_snapshots_and_the_optimizer(settings):
    set_memory(settings, "monitoring", enabled=False, memory_threshold=0.0001)
    skipped = {"skipped": True, "reason": "monitoring.enabled is false"}

    assert tasks.metrics_snapshot_task.apply().get() == skipped
    assert tasks.memory_optimize_task.apply().get() == skipped
    assert MetricSnapshot.objects.count() == 0
    assert not HistoryRecord.objects.filter(action="memory_optimized").exists()


def test_with_monitoring_on_the_snapshot_task_stores_one(settings, cache_namespaces):
    cache_namespaces(text={"backend": "memory", "ttl": 60})

    result = tasks.metrics_snapshot_task.apply().get()

    assert result == {"snapshot": MetricSnapshot.objects.get().pk, "pruned": 0}


def test_the_scheduled_integrity_check_repairs_as_configured(settings, cache_namespaces, cache_root):
    cache_namespaces(images={"backend": "file", "ttl": 60, "directory": "img"})
    set_memory(settings, "cache_options", orphan_grace_seconds=0)
    stray = cache_root / "img" / "ab" / ("ab" * 32 + "-0123456789abcdef")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    set_memory(settings, "maintenance", integrity_repair=False)

    assert tasks.integrity_check_task.apply().get()["unrepaired"] == 1
    assert stray.exists()

    set_memory(settings, "maintenance", integrity_repair=True)
    result = tasks.integrity_check_task.apply().get()

    assert (result["problems"], result["unrepaired"], stray.exists()) == (1, 0, False)
    assert CacheEntry.objects.count() == 0
