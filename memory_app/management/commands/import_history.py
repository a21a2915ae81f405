"""Read a project's history back from the seed's layout; importing the same files twice adds nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.errors import ComicmemError
from memory_app.models import PROJECT_ID_PATTERN, Project
from memory_app.services.history import history_import


class Command(BaseCommand):
    help = "Import DIR/projects/<id>/processing/history_YYYYMM.json into the project's history."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_id")
        parser.add_argument("--from", dest="source", required=True, type=Path, help="the folder holding projects/")

    def handle(self, *args: Any, **options: Any) -> None:
        project_id = options["project_id"]
        if not PROJECT_ID_PATTERN.fullmatch(project_id):
            raise CommandError(f"'{project_id}' is not a valid project id.")
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            raise CommandError(f"Project '{project_id}' does not exist; create it first.")
        try:
            result = history_import(project=project, source_dir=options["source"])
        except ComicmemError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Imported {result.imported} records from {result.files} files; {result.skipped} already present."
        )
