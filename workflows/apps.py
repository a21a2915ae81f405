from __future__ import annotations

from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from memory_app.services.workflow import workflow_operations_register
        from workflows.engine import EngineOperations

        workflow_operations_register(operations=EngineOperations())
        # The tasks module hands its ``run_unit`` task to the engine's dispatch: web and worker alike send units.
        import_module("workflows.tasks")
        # Workflow types register themselves when their module is imported (web and worker alike). The real
        # pipelines always; WORKFLOW_MODULES adds more (the tests' small pipelines).
        import_module("workflows.pipelines")
        for module in getattr(settings, "WORKFLOW_MODULES", []):
            import_module(module)
