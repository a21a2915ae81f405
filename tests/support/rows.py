"""What a refused request must leave untouched: counts of the rows a write through the API would add."""

from __future__ import annotations

from memory_app.models import ConversationContext, Project, StyleTemplate, WorkflowState


def written() -> tuple[int, int, int, int]:
    return (
        Project.objects.count(),
        ConversationContext.objects.count(),
        StyleTemplate.objects.filter(owner__isnull=False).count(),
        WorkflowState.objects.count(),
    )
