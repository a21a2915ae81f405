"""The beat schedules follow the configuration: after migrate and at every beat start (schedules_sync)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from celery.signals import beat_init
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from comicmem_site.celery import app
from comicmem_site.memory_config import CacheNamespaceConfig
from memory_app.services.schedules import schedules_from_config, schedules_sync
from tests.memory_app.test_schedules import set_memory

pytestmark = pytest.mark.django_db


def rows() -> dict[str, tuple[str, int, dict, bool]]:
    return {
        task.name: (task.task, task.interval.every, json.loads(task.kwargs), task.enabled)
        for task in PeriodicTask.objects.select_related("interval").exclude(name="celery.backend_cleanup")
    }


EXPECTED = {
    "cache-cleanup-text_analysis": ("memory_app.cache_cleanup", 300, {"namespace": "text_analysis"}, True),
    "cache-cleanup-api_responses": ("memory_app.cache_cleanup", 300, {"namespace": "api_responses"}, True),
    "cache-cleanup-images": ("memory_app.cache_cleanup", 3600, {"namespace": "images"}, True),
    "history-archive": ("memory_app.history_archive", 3600, {}, True),
    "contexts-release": ("memory_app.contexts_release", 3600, {}, True),
    "memory-optimize": ("memory_app.memory_optimize", 300, {}, True),
    "metrics-snapshot": ("memory_app.metrics_snapshot", 300, {}, True),
    "integrity-check": ("memory_app.integrity_check", 86400, {}, True),
    "memory-backup": ("memory_app.backup", 1800, {}, True),
    "workflows-recover": ("workflows.recover", 10, {}, True),
    "workflows-detect-stuck": ("workflows.detect_stuck", 300, {}, True),
    "storage-deletions-sweep": ("memory_app.storage_deletions_sweep", 300, {}, True),
    "outputs-expire": ("memory_app.outputs_expire", 3600, {}, True),
    "webhook-deliveries-sweep": ("memory_app.webhook_deliveries_sweep", 60, {}, True),
    "events-cleanup": ("memory_app.events_cleanup", 3600, {}, True),
}


def test_after_migrate_the_rows_are_the_configured_schedules():
    # The test database was migrated: the post_migrate sync replaced the single cache-cleanup row of migration
    # 0008 with one per namespace and added the backup schedule.
    assert rows() == EXPECTED
    app.autodiscover_tasks(["memory_app", "workflows"], force=True)
    assert {schedule.task for schedule in schedules_from_config()} <= set(app.tasks)


def test_a_changed_configuration_is_followed_at_the_next_beat_start(settings):
    set_memory(settings, "workflow", backup_interval=600, recovery_interval=7)
    set_memory(settings, "history", archive_interval_seconds=120)
    set_memory(settings, "conversation", release_interval_seconds=900)
    settings.MEMORY = settings.MEMORY.model_copy(
        update={
            "cache": {
                "text_analysis": CacheNamespaceConfig(backend="memory", ttl=60, cleanup_interval=45),
                "thumbnails": CacheNamespaceConfig(backend="memory", ttl=60, cleanup_interval=90),
            }
        }
    )
    before = PeriodicTasks.last_change()

    beat_init.send(sender=None)  # what `celery beat` sends once its scheduler is set up

    after = rows()
    assert after["memory-backup"][1] == 600
    assert after["workflows-recover"][1] == 7
    assert after["history-archive"][1] == 120
    assert after["contexts-release"][1] == 900
    assert after["cache-cleanup-text_analysis"] == (
        "memory_app.cache_cleanup",
        45,
        {"namespace": "text_analysis"},
        True,
    )
    assert after["cache-cleanup-thumbnails"] == ("memory_app.cache_cleanup", 90, {"namespace": "thumbnails"}, True)
    # Namespaces no longer configured lose their schedules.
    assert "cache-cleanup-images" not in after and "cache-cleanup-api_responses" not in after
    # A running beat is told that its schedule changed.
    assert PeriodicTasks.last_change() is not None and PeriodicTasks.last_change() != before


def test_the_configuration_wins_over_an_edited_interval_and_the_admins_switch_stays():
    task = PeriodicTask.objects.get(name="metrics-snapshot")
    task.interval = IntervalSchedule.objects.create(every=999, period="seconds")
    task.enabled = False
    task.save()
    PeriodicTask.objects.create(name="staff-own", task="memory_app.ping", interval=task.interval)

    report = schedules_sync()

    assert report.updated == ["metrics-snapshot"]
    after = rows()
    assert after["metrics-snapshot"] == ("memory_app.metrics_snapshot", 300, {}, False)
    assert after["staff-own"][:2] == ("memory_app.ping", 999)


def test_a_sync_with_nothing_to_change_changes_nothing():
    assert schedules_sync().changed is False
    assert rows() == EXPECTED


def test_a_namespaces_cleanup_task_cleans_only_that_namespace(cache_namespaces):
    from django.utils import timezone

    from memory_app import tasks
    from memory_app.models import CacheEntry
    from memory_app.services.cache import cache_set

    cache_namespaces(
        one={"backend": "file", "ttl": 60, "directory": "one"}, two={"backend": "file", "ttl": 60, "directory": "two"}
    )
    cache_set(namespace="one", key="k", value=b"1", content_type="text/plain", ttl=1)
    cache_set(namespace="two", key="k", value=b"2", content_type="text/plain", ttl=1)
    CacheEntry.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=5))

    assert tasks.cache_cleanup_task.apply(kwargs={"namespace": "one"}).get()["expired_entries"] == 1
    assert list(CacheEntry.objects.values_list("namespace", flat=True)) == ["two"]
