"""The list filters of /api/workflows/ as a django-filter FilterSet (applied by memory_app's FilterBackend)."""

from __future__ import annotations

import django_filters

from memory_app.models import WorkflowState, WorkflowStatus


class WorkflowFilterSet(django_filters.FilterSet):
    refusal_messages = {"status": "Unknown status '{value}'."}

    # The public id as given: a run of no project of the caller's simply matches nothing (never a 400 or 404).
    project_id = django_filters.CharFilter(field_name="project__public_id", strip=False)
    status = django_filters.ChoiceFilter(
        choices=WorkflowStatus.choices,
        error_messages={"invalid_choice": f"Must be one of: {', '.join(WorkflowStatus.values)}."},
    )
    workflow_type = django_filters.CharFilter(strip=False)

    class Meta:
        model = WorkflowState
        fields: list[str] = []
