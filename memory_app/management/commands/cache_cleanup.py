from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from memory_app.selectors.cache import human_size
from memory_app.services.cache import cache_cleanup


class Command(BaseCommand):
    help = "Remove expired cache entries, orphaned blobs and stale temporary files; report what was freed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=None, help="rows per batch (default from config)")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size: int | None = options["batch_size"]
        if batch_size is not None and int(batch_size) < 1:
            self.stderr.write("--batch-size must be 1 or more")
            raise SystemExit(2)
        report = cache_cleanup(batch_size=batch_size)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
            return
        self.stdout.write(
            f"Removed {report.expired_entries} expired entries, {report.orphaned_blobs} orphaned blobs and "
            f"{report.temporary_files} temporary files; freed {human_size(report.bytes_freed)} "
            f"({report.bytes_freed} bytes)."
        )
