"""Write a project's history in the seed's layout: projects/<id>/processing/history_YYYYMM.json + timeline.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.errors import ComicmemError
from memory_app.models import PROJECT_ID_PATTERN, Project
from memory_app.services.history import history_export


class Command(BaseCommand):
    help = "Export a project's history (database and archives) to DIR/projects/<id>/processing/."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_id")
        parser.add_argument("--out", required=True, type=Path, help="the folder that receives projects/<id>/…")

    def handle(self, *args: Any, **options: Any) -> None:
        project_id = options["project_id"]
        if not PROJECT_ID_PATTERN.fullmatch(project_id):
            raise CommandError(f"'{project_id}' is not a valid project id.")
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            raise CommandError(f"Project '{project_id}' does not exist.")
        try:
            result = history_export(project=project, out_dir=options["out"])
        except (ComicmemError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Exported {result.records} records of {project_id} to {len(result.files)} files.")
