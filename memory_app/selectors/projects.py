from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from memory_app.errors import NotFound, ValidationFailed
from memory_app.models import PROJECT_ID_PATTERN, Project
from memory_app.selectors.ownership import scope_to_owner


def project_list(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Project]:
    return scope_to_owner(Project.objects.select_related("owner"), user=user)


def project_get(*, user: AbstractBaseUser | AnonymousUser, project_id: str) -> Project:
    """The user's project, or NotFound (also for someone else's: its existence is not revealed).

    An id that is not a valid slug is refused before any query, so it can never reach a file path.
    """
    if not PROJECT_ID_PATTERN.fullmatch(project_id or ""):
        raise ValidationFailed(
            "A project id is 1-64 letters, digits, '-' or '_', starting with a letter or digit.",
            details={"fields": {"project_id": ["Not a valid project id."]}},
        )
    project = project_list(user=user).filter(pk=project_id).first()
    if project is not None:
        return project
    raise NotFound(
        f"Project '{project_id}' does not exist.",
        details={"project_id": project_id, "suggestion": "Check the project id; list yours at /api/projects/."},
    )
