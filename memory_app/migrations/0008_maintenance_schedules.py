"""The maintenance schedules, as django-celery-beat rows staff can edit in the admin.

Created once here (never re-synced from settings), so an edited interval survives every beat start. The first
intervals come from memory_config.yaml at the time of the migration.
"""

from django.conf import settings
from django.db import migrations
from django.utils import timezone


def _schedules():
    memory = settings.MEMORY
    cleanup = min((namespace.cleanup_interval for namespace in memory.cache.values()), default=300)
    return [
        ("cache-cleanup", "memory_app.cache_cleanup", cleanup, "Expired cache entries, orphaned blobs (§4)."),
        (
            "history-archive",
            "memory_app.history_archive",
            memory.history.archive_interval_seconds,
            "History retention and archiving (§3).",
        ),
        ("contexts-release", "memory_app.contexts_release", 3600, "Release of inactive contexts (§7.1)."),
        (
            "memory-optimize",
            "memory_app.memory_optimize",
            memory.maintenance.optimize_interval_seconds,
            "Memory optimizer above monitoring.memory_threshold (§7.1).",
        ),
        (
            "metrics-snapshot",
            "memory_app.metrics_snapshot",
            memory.monitoring.snapshot_interval_seconds,
            "Metric snapshots for the usage analysis (§9.2).",
        ),
        (
            "integrity-check",
            "memory_app.integrity_check",
            memory.maintenance.integrity_interval_seconds,
            "Integrity check with repair (§8.1).",
        ),
        (
            "workflows-recover",
            "workflows.recover",
            memory.workflow.recovery_interval,
            "Re-enqueue workflow units whose lease expired.",
        ),
        (
            "workflows-detect-stuck",
            "workflows.detect_stuck",
            memory.maintenance.stuck_check_interval_seconds,
            "Flag (and optionally resume) stuck workflow runs.",
        ),
    ]


def create_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    for name, task, seconds, description in _schedules():
        interval, _ = IntervalSchedule.objects.get_or_create(every=int(seconds), period="seconds")
        # get_or_create: a row that exists already (staff made it, or an older setup) is left as it is.
        PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "interval": interval, "description": description, "enabled": True}
        )
    # Tell a running beat that its schedule changed.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedules(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in _schedules()]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("memory_app", "0007_operations"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
