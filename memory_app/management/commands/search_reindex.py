"""Rebuild the recall index (``memory_app.services.search.search_reindex``): after an upgrade that changes how
text is cut into words, after turning ``search.index_messages`` on or off, or to repair it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.errors import ComicmemError
from memory_app.models import SearchKind
from memory_app.selectors.projects import project_find
from memory_app.services.search import search_reindex


class Command(BaseCommand):
    help = "Rebuild the search index rows of messages, history records, characters and story texts, in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--kind", action="append", choices=SearchKind.values, help="only this kind (repeatable); default: all"
        )
        parser.add_argument("--project", help="only this project's objects (its id)")
        parser.add_argument("--owner", help="the project's owner (needed when several owners have that id)")
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        project = None
        if options["project"]:
            try:
                project = project_find(project_id=options["project"], owner_username=options["owner"])
            except ComicmemError as exc:
                raise CommandError(exc.message) from exc
            if project is None:
                raise CommandError(f"Project '{options['project']}' does not exist.")
        written = search_reindex(
            kinds=options["kind"] or list(SearchKind.values), project=project, batch_size=options["batch_size"]
        )
        for kind, count in written.items():
            self.stdout.write(f"{kind}: {count} rows")
