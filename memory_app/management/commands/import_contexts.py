"""manage.py import_contexts USERNAME FILE: import a §2.3 persistence document; all or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.errors import ComicmemError
from memory_app.services.conversation import context_import


class Command(BaseCommand):
    help = "Import conversation contexts from context_persistence JSON for a user. A bad file imports nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("file")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        try:
            document = json.loads(Path(options["file"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read {options['file']}: {exc}") from None
        try:
            contexts = context_import(owner=user, document=document)
        except ComicmemError as exc:
            raise CommandError(f"{exc.code}: {exc.message} {json.dumps(exc.details, ensure_ascii=False)}") from None
        self.stdout.write(f"imported {len(contexts)} context(s): {', '.join(str(c.id) for c in contexts)}")
