"""manage.py generate_comic story.txt --project proj-001 --style manga_shonen [--inline]"""

from __future__ import annotations

from typing import Any

from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandParser

from memory_app.blob_storage import DEFAULT_STORAGE, blob_signed_url, blob_storage_is_local
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
        self.stdout.write(f"{len(outputs.get('panels', []))} panels, {len(outputs.get('pages', []))} pages:\n")
        for name in outputs.get("pages", []):
            # A local file's path; in object storage, the page's name there and a signed URL that loads it.
            if blob_storage_is_local(DEFAULT_STORAGE):
                self.stdout.write(f"  {default_storage.path(name)}\n")
            else:
                self.stdout.write(f"  {name}  {blob_signed_url(name=name)}\n")
