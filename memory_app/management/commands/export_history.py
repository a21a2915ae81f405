"""Write a project's history in the seed's layout: projects/<id>/processing/history_YYYYMM.json + timeline.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.errors import ComicmemError
from memory_app.selectors.projects import project_find
from memory_app.services.history import history_export


class Command(BaseCommand):
    help = "Export a project's history (database and archives) to DIR/projects/<id>/processing/."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_id")
        parser.add_argument("--out", required=True, type=Path, help="the folder that receives projects/<id>/…")
        parser.add_argument("--owner", help="the project's owner (needed when several owners have that id)")

    def handle(self, *args: Any, **options: Any) -> None:
        project_id = options["project_id"]
        try:
            project = project_find(project_id=project_id, owner_username=options["owner"])
        except ComicmemError as exc:
            raise CommandError(exc.message) from exc
        if project is None:
            raise CommandError(f"Project '{project_id}' does not exist.")
        try:
            result = history_export(project=project, out_dir=options["out"])
        except (ComicmemError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Exported {result.records} records of {project_id} to {len(result.files)} files.")
