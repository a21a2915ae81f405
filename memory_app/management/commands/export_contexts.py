"""manage.py export_contexts USERNAME [--context ID] [--output FILE]: the §2.3 persistence document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.errors import ComicmemError
from memory_app.selectors.conversation import context_get, context_list
from memory_app.services.conversation import context_export_document


class Command(BaseCommand):
    help = "Export one conversation context, or all of a user's, as the seed's context_persistence JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--context", dest="context_id", help="One context id; all the user's without it.")
        parser.add_argument("--output", help="File to write (temp file + rename); standard output without it.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        try:
            if options["context_id"]:
                contexts = [context_get(user=user, context_id=options["context_id"])]
            else:
                contexts = list(context_list(user=user).filter(owner=user).order_by("created_at"))
        except ComicmemError as exc:
            raise CommandError(exc.message) from None
        default = next((context.id for context in contexts if context.is_default), None)
        text = json.dumps(
            context_export_document(contexts=contexts, default_context_id=default), ensure_ascii=False, indent=2
        )
        if options["output"]:
            target = Path(options["output"])
            partial = target.with_name(target.name + ".partial")
            partial.write_text(text + "\n", encoding="utf-8")
            partial.replace(target)  # a reader never sees half a file
            self.stderr.write(f"exported {len(contexts)} context(s) to {target}")
        else:
            self.stdout.write(text)
