from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connections
from django.db.models import Case, IntegerField, QuerySet, Value, When

from memory_app.blob_storage import DEFAULT_STORAGE, blob_signed_url
from memory_app.errors import Conflict, NotFound, ValidationFailed
from memory_app.models import PROJECT_ID_PATTERN, Project
from memory_app.selectors.ownership import scope_to_owner
from memory_app.selectors.statements import column, model_columns


def project_list(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Project]:
    return scope_to_owner(Project.objects.select_related("owner"), user=user)


def project_get(*, user: AbstractBaseUser | AnonymousUser, project_id: str) -> Project:
    """The user's project whose public id is ``project_id``, or NotFound (also when only someone else has one:
    ids are per owner, so another owner's project of that id is neither revealed nor reachable).

    Staff reach every project: their own of that id first, else the only one; when several owners have it,
    a Conflict names them (staff then act through the admin). An id that is not a valid slug is refused before
    any query.
    """
    if not PROJECT_ID_PATTERN.fullmatch(project_id or ""):
        raise ValidationFailed(
            "A project id is 1-64 letters, digits, '-' or '_', starting with a letter or digit.",
            details={"fields": {"project_id": ["Not a valid project id."]}},
        )
    if user.is_authenticated and not getattr(user, "is_staff", False):
        # The usual caller: only their own projects, where the id is unique (``project_unique_public_id``).
        own = _own_project(user=user, project_id=project_id)
        if own is not None:
            return own
        raise NotFound(
            f"Project '{project_id}' does not exist.",
            details={"project_id": project_id, "suggestion": "Check the project id; list yours at /api/projects/."},
        )
    candidates = list(
        project_list(user=user)
        .filter(public_id=project_id)
        .annotate(
            mine=Case(
                When(owner_id=getattr(user, "pk", None), then=Value(0)), default=Value(1), output_field=IntegerField()
            )
        )
        .order_by("mine", "created_at", "id")[:3]
    )
    if candidates and (len(candidates) == 1 or candidates[0].owner_id == user.pk):
        return candidates[0]
    if candidates:
        owners = sorted(project.owner.get_username() for project in candidates)
        raise Conflict(
            f"Several owners have a project '{project_id}'.",
            details={"project_id": project_id, "owners": owners, "suggestion": "Open it from the admin."},
        )
    raise NotFound(
        f"Project '{project_id}' does not exist.",
        details={"project_id": project_id, "suggestion": "Check the project id; list yours at /api/projects/."},
    )


@functools.cache
def _own_project_statement(alias: str) -> str:
    quote = connections[alias].ops.quote_name
    return (
        f"SELECT {model_columns(alias, Project).select} FROM {quote(Project._meta.db_table)} "  # noqa: S608 - model metadata
        f"WHERE {column(alias, Project, 'owner')} = %s AND {column(alias, Project, 'public_id')} = %s"
    )


def _own_project(*, user: AbstractBaseUser, project_id: str) -> Project | None:
    """The user's own project of that public id, its owner being ``user``: one plain SELECT, as every request on a
    project asks (``selectors.statements``)."""
    alias = Project.objects.db
    with connections[alias].cursor() as cursor:
        cursor.execute(_own_project_statement(alias), [user.pk, project_id])
        row = cursor.fetchone()
    if row is None:
        return None
    project = model_columns(alias, Project).instance(Project, row)
    project.owner = user  # type: ignore[assignment]  # the owner's row is the caller's, as select_related reads it
    return project


def project_find(*, project_id: str, owner_username: str | None = None) -> Project | None:
    """For commands run by an operator (no request user): the project of that public id owned by
    ``owner_username`` when given, else the only one of that id; None when there is none. Several owners with
    that id and no owner named is a Conflict that names them."""
    if not PROJECT_ID_PATTERN.fullmatch(project_id or ""):
        raise ValidationFailed(
            f"'{project_id}' is not a valid project id.", details={"fields": {"project_id": ["Not a valid id."]}}
        )
    projects = Project.objects.select_related("owner").filter(public_id=project_id).order_by("created_at", "id")
    if owner_username is not None:
        return projects.filter(owner__username=owner_username).first()
    candidates = list(projects[:3])
    if len(candidates) > 1:
        owners = sorted(project.owner.get_username() for project in candidates)
        raise Conflict(
            f"Several owners have a project '{project_id}' ({', '.join(owners)}): name the owner.",
            details={"project_id": project_id, "owners": owners},
        )
    return candidates[0] if candidates else None


def project_paths_public(value: Any, *, project: Project | None) -> Any:
    """``value`` (JSON: run data, history details) with the storage names of the project's files, which hold
    its internal key (``projects/<key>/…``), as its owner names them (``projects/<public id>/…``). Answers
    show only the public id; previous_context takes either form back, for the caller's own project only."""
    if project is None or project.pk == project.public_id:
        return value
    inner, outer = f"projects/{project.pk}/", f"projects/{project.public_id}/"

    def public(item: Any) -> Any:
        if isinstance(item, str):
            return item.replace(inner, outer) if inner in item else item
        if isinstance(item, dict):
            return {key: public(entry) for key, entry in item.items()}
        if isinstance(item, list):
            return [public(entry) for entry in item]
        return item

    return public(value)


# The storage name of a run's panel or page, as image_generation_completed recorded it before it held the URL.
_LEGACY_IMAGE_PATH = re.compile(r"/?projects/(?P<key>[^/]+)/images/(?P<run>[^/]+)/(?P<name>[^/]+\.png)")
# The run's authenticated outputs route, as image_generation_completed records it now.
_OUTPUT_ROUTE = re.compile(r"/api/workflows/(?P<run>[^/]+)/outputs/(?P<name>[A-Za-z0-9_-][A-Za-z0-9_.-]*\.png)/?")


def history_details_public(
    details: Any,
    *,
    project: Project | None,
    workflow_id: UUID | str | None,
    absolute_url: Callable[[str], str] | None = None,
) -> Any:
    """A history record's details as answers show them: every ``image_url`` of the record's own run as a signed,
    expiring URL a browser loads without an Authorization header (``memory_app.blob_storage.blob_signed_url``:
    presigned by the object store, or a Django-signed ``/api/files/`` URL made absolute by ``absolute_url``), and
    the project's files under its public id.

    Only a file of the record's own run in this project's folder becomes a link; any other path stays as text.
    """
    return history_details_linker(project=project, absolute_url=absolute_url)(details, workflow_id)


def history_details_linker(
    *, project: Project | None, absolute_url: Callable[[str], str] | None = None
) -> Callable[[Any, UUID | str | None], Any]:
    """``history_details_public`` for the records of one project, made once for a page of them: a function of a
    record's details and its run."""

    def image_url(value: str, workflow_id: UUID | str | None) -> str:
        match = _LEGACY_IMAGE_PATH.fullmatch(value)
        # The project's files are shown under its public id first (below), so a legacy path may hold either.
        own = match is not None and project is not None and match["key"] in (project.pk, project.public_id)
        if match is None:
            match = _OUTPUT_ROUTE.fullmatch(value)
            own = match is not None and project is not None
        if match is None or not own or project is None or match["run"] != str(workflow_id) or ".." in match["name"]:
            return value
        # The storage name is built from the project's key and the record's own run, never taken from the value.
        name = f"projects/{project.pk}/images/{workflow_id}/{match['name']}"
        return blob_signed_url(name=name, alias=DEFAULT_STORAGE, absolute_url=absolute_url)

    def linked(item: Any, workflow_id: UUID | str | None) -> Any:
        if isinstance(item, dict):
            if not any(key == "image_url" or isinstance(entry, dict | list) for key, entry in item.items()):
                return item  # nothing to link inside: the usual record's details, answered as they are
            return {
                key: image_url(entry, workflow_id)
                if key == "image_url" and isinstance(entry, str)
                else linked(entry, workflow_id)
                for key, entry in item.items()
            }
        if isinstance(item, list):
            return [linked(entry, workflow_id) for entry in item]
        return item

    # A storage name holding the project's internal key, which answers show under its public id.
    inner = f"projects/{project.pk}/" if project is not None and project.pk != project.public_id else None

    def plain(item: dict[str, Any]) -> bool:
        """Whether a record's details are answered as they are: no ``image_url``, nothing nested, no storage name
        to rename (the usual record's details)."""
        for key, entry in item.items():
            if key == "image_url" or isinstance(entry, dict | list):
                return False
            if inner is not None and isinstance(entry, str) and inner in entry:
                return False
        return True

    def public(details: Any, workflow_id: UUID | str | None) -> Any:
        if type(details) is dict and plain(details):
            return details
        # Public names first, links second: a presigned URL holds the storage name and must reach the browser intact.
        return linked(project_paths_public(details, project=project), workflow_id)

    return public
