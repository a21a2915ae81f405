"""A project: the unit a user's comics, history and outputs belong to."""

from __future__ import annotations

import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

# Letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters. The public id a user
# chooses; the internal key (a folder name in storage, projects/<key>/…) matches it too.
PROJECT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def validate_project_id(value: str) -> None:
    if not isinstance(value, str) or not PROJECT_ID_PATTERN.fullmatch(value):
        raise ValidationError(
            "A project id is 1-64 letters, digits, '-' or '_', starting with a letter or digit.",
            code="invalid_project_id",
        )


def new_internal_key() -> str:
    """An opaque key nobody chooses: ids are per owner, so a key must never be derived from one."""
    return uuid.uuid4().hex


class Project(models.Model):
    """``id`` is the internal key (foreign keys, storage folders); ``public_id`` is the id its owner chose and
    the only one the API shows. Two owners may each have a project "alpha"; they are two unrelated projects.
    Rows made before public ids existed kept their id as key (it was globally unique then)."""

    id = models.CharField(primary_key=True, max_length=64, default=new_internal_key, validators=[validate_project_id])
    public_id = models.CharField(max_length=64, validators=[validate_project_id])
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="project_owner_created")]
        constraints = [models.UniqueConstraint(fields=["owner", "public_id"], name="project_unique_public_id")]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.name})"
