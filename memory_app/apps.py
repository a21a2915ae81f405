from importlib import import_module
from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_schedules_after_migrate(using: str = "default", **_: Any) -> None:
    # The beat schedules follow the configuration from the first migrate on (and at every beat start, tasks.py).
    from django.db import DEFAULT_DB_ALIAS, connections

    if (
        using != DEFAULT_DB_ALIAS
        or "django_celery_beat_periodictask" not in connections[using].introspection.table_names()
    ):
        return
    from memory_app.services.schedules import schedules_sync

    schedules_sync()


class MemoryAppConfig(AppConfig):
    name = "memory_app"
    verbose_name = "Memory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_sync_schedules_after_migrate, sender=self, dispatch_uid="memory_app.schedules_sync")
        # Registered in web and worker alike: a project's deletion sends its file-removal task by that task.
        import_module("memory_app.tasks")
        # The provider settings' system check (manage.py check, and every command that runs the checks).
        import_module("memory_app.checks")
