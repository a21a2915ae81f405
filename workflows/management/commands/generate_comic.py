"""manage.py generate_comic story.txt --project proj-001 --style manga_shonen [--inline]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from workflows import cli


class Command(BaseCommand):
    help = "Turn a story into comic pages with a progress bar; prints where the pages are."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_common_arguments(parser)
        parser.add_argument("--style", default=None, help="Style template id (default: pipelines.default_style).")
        parser.add_argument("--segment-length", type=int, default=None, help="Target characters per panel.")
        parser.add_argument("--previous-context", default=None, help="Project path, image URL or text.")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        data: dict[str, Any] = {"text": cli.read_text(options["text_file"])}
        if options["style"]:
            data["style"] = options["style"]
        if options["previous_context"]:
            data["previous_context"] = options["previous_context"]
        preferences = {
            key: options[option]
            for key, option in (("segment_length", "segment_length"), ("seed", "seed"))
            if options[option] is not None
        }
        run = cli.run_with_progress(
            out=self.stdout,
            workflow_type="comic_generation",
            project=cli.project_for(options),
            data=data,
            preferences=preferences,
            inline=options["inline"],
            timeout=options["timeout"],
            poll=options["poll"],
        )
        cli.report(self.stdout, run)
        outputs = run.data.get("outputs", {})
        root = Path(settings.MEDIA_ROOT)
        self.stdout.write(f"{len(outputs.get('panels', []))} panels, {len(outputs.get('pages', []))} pages:\n")
        for name in outputs.get("pages", []):
            self.stdout.write(f"  {root / name}\n")
