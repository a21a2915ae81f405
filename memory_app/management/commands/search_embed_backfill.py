"""Embed every indexed text that has no vector yet (after embeddings are first configured, after a model change,
or for texts whose task was lost), in batches; on PostgreSQL whose server has gained pgvector, enable it first."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.errors import ProviderError
from memory_app.selectors.search_vectors import vector_backend
from memory_app.services.search_vectors import search_embed_backfill_batch, search_vectors_pgvector_enable


class Command(BaseCommand):
    help = "Compute the vectors of indexed texts that have none (embeddings endpoint required), in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size", type=int, default=None, help="texts per batch (default: search.embeddings.batch_size)"
        )
        parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"] or settings.MEMORY.search.embeddings.batch_size
        max_batches: int | None = options["max_batches"]
        if batch_size < 1 or (max_batches is not None and max_batches < 1):
            raise CommandError("--batch-size and --max-batches must be 1 or more")
        search_vectors_pgvector_enable()
        embedded, batches, remaining = 0, 0, 0
        while max_batches is None or batches < max_batches:
            try:
                report = search_embed_backfill_batch(batch_size=batch_size)
            except ProviderError as exc:
                raise CommandError(
                    f"{exc.message} ({embedded} texts embedded before); run the command again to go on."
                ) from None
            if report.skipped:
                raise CommandError(
                    "Embeddings are not configured (search.embeddings.base_url and model, or EMBEDDINGS_BASE_URL "
                    "and EMBEDDINGS_MODEL): recall is lexical only."
                )
            batches += 1
            embedded += report.embedded
            remaining = report.remaining or 0
            if not remaining or not report.embedded:
                break
        result = {"embedded": embedded, "batches": batches, "remaining": remaining, "backend": vector_backend()}
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(
            f"Embedded {embedded} texts in {batches} batches; {remaining} left; vector backend: {result['backend']}."
        )
