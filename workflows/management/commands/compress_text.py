"""manage.py compress_text story.txt [--ratio 0.75] [--project ID] [--inline] [--output FILE]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from workflows import cli


class Command(BaseCommand):
    help = "Compress a story to a target ratio, keeping its named characters, with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_common_arguments(parser)
        parser.add_argument("--ratio", type=float, default=None, help="Share of the text to keep (0-1).")
        parser.add_argument("--output", type=Path, default=None, help="Write the compressed text here.")

    def handle(self, *args: Any, **options: Any) -> None:
        preferences = {"target_ratio": options["ratio"]} if options["ratio"] is not None else {}
        run = cli.run_with_progress(
            out=self.stdout,
            workflow_type="text_compression",
            project=cli.project_for(options),
            data={"text": cli.read_text(options["text_file"])},
            preferences=preferences,
            inline=options["inline"],
            timeout=options["timeout"],
            poll=options["poll"],
        )
        cli.report(self.stdout, run)
        quality = run.data.get("quality", {})
        self.stdout.write(
            f"ratio {quality.get('compression_ratio')} (target {quality.get('target_ratio')}), "
            f"characters kept: {', '.join(quality.get('preserved_characters', [])) or 'none'}\n"
        )
        if options["output"] is not None:
            options["output"].write_text(run.data["compressed_text"], encoding="utf-8")
            self.stdout.write(f"written to {options['output']}\n")
        else:
            self.stdout.write(run.data["compressed_text"] + "\n")
