"""Projects: the only code that writes them."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from memory_app.errors import Conflict, ProjectLimitReached
from memory_app.models import HistoryAction, Project
from memory_app.services.history import history_record
from memory_app.services.storage_lifecycle import project_files_release

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def _new_project_id() -> str:
    return f"proj-{secrets.token_hex(4)}"


@transaction.atomic
def project_create(*, owner: User, name: str, description: str = "", project_id: str | None = None) -> Project:
    """Create a project. Its id is the owner's (another owner's project of the same id is a different project):
    an id the owner already has is a Conflict. The internal key is generated.

    A user owns at most ``projects.max_projects_per_user`` projects: one more is ProjectLimitReached.
    """
    project_id = project_id or _new_project_id()
    # The owner's row lock serialises this user's creations, so two at once cannot both pass the count (NO KEY
    # UPDATE: rows being inserted with this user as their foreign key do not hold it up).
    get_user_model().objects.select_for_update(no_key=True).filter(pk=owner.pk).first()
    limit = settings.MEMORY.projects.max_projects_per_user
    existing = Project.objects.filter(owner=owner).count()
    if existing >= limit:
        raise ProjectLimitReached(
            f"You have {existing} projects; the limit is {limit}.",
            details={
                "limit": limit,
                "current": existing,
                "suggestion": "Delete projects you no longer need (DELETE /api/projects/{id}/).",
            },
        )
    if Project.objects.filter(owner=owner, public_id=project_id).exists():
        raise Conflict(f"Project id '{project_id}' is taken.", details={"project_id": project_id})
    try:
        with transaction.atomic():
            project = Project.objects.create(public_id=project_id, owner=owner, name=name, description=description)
    except IntegrityError:
        # The same owner created the same id between the check and the insert.
        raise Conflict(f"Project id '{project_id}' is taken.", details={"project_id": project_id}) from None
    history_record(
        project=project,
        action=HistoryAction.PROJECT_CREATED,
        details={"name": name},
        user=owner,
        summary=f"Project '{name}' created.",
    )
    return project


@transaction.atomic
def project_update(*, project: Project, name: str | None = None, description: str | None = None) -> Project:
    fields = []
    if name is not None:
        project.name = name
        fields.append("name")
    if description is not None:
        project.description = description
        fields.append("description")
    if fields:
        project.save(update_fields=[*fields, "updated_at"])
    return project


@transaction.atomic
def project_delete(*, project: Project) -> None:
    """Delete the project and everything of it. Its rows go with it (cascade); its files (runs' outputs,
    history archives) and the cache entries no other live project used are written down in this transaction and
    removed by a task once it commits (``storage_lifecycle``), so a crash between the two loses nothing."""
    project_files_release(project=project)
    project.delete()
