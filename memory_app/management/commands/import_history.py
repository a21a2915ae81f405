"""Read a project's history back from the seed's layout; importing the same files twice adds nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from memory_app.errors import ComicmemError
from memory_app.models import Project
from memory_app.selectors.projects import project_find
from memory_app.services.history import history_import
from memory_app.services.projects import project_create


class Command(BaseCommand):
    help = "Import DIR/projects/<id>/processing/history_YYYYMM.json into the project's history."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_id")
        parser.add_argument("--from", dest="source", required=True, type=Path, help="the folder holding projects/")
        parser.add_argument("--owner", help="the project's owner: created for this user when they have none of that id")

    def handle(self, *args: Any, **options: Any) -> None:
        project_id = options["project_id"]
        try:
            with transaction.atomic():
                project = project_find(project_id=project_id, owner_username=options["owner"])
                if project is None:
                    project = self._create(project_id, options["owner"])
                result = history_import(project=project, source_dir=options["source"])
        except ComicmemError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Imported {result.imported} records from {result.files} files; {result.skipped} already present."
        )

    def _create(self, project_id: str, owner_name: str | None) -> Project:
        if not owner_name:
            raise CommandError(f"Project '{project_id}' does not exist; create it first or pass --owner.")
        owner = get_user_model().objects.filter(username=owner_name).first()
        if owner is None:
            raise CommandError(f"User '{owner_name}' does not exist.")
        return project_create(owner=owner, name=project_id, project_id=project_id)
