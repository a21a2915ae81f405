"""Move history past retention (or beyond the per-project cap) into verified archives, batch by batch."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.errors import ComicmemError
from memory_app.services.history import history_archive_run, history_archive_sweep, history_archive_verify_all


class Command(BaseCommand):
    help = "Archive history records older than history.retention_days or beyond max_history_per_project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=None, help="records per batch (archive_batch_size)")
        parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
        parser.add_argument(
            "--verify", action="store_true", help="only read every archive back and check it against its manifest"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verify"]:
            self._verify()
            return
        for name in ("batch_size", "max_batches"):
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        try:
            result = history_archive_run(batch_size=options["batch_size"], max_batches=options["max_batches"])
            # Like the task, sweep leftover files once nothing more is due.
            swept = 0 if result.more else history_archive_sweep()
        except ComicmemError as exc:
            raise CommandError(exc.message) from exc
        more = " More records are due: run again." if result.more else ""
        leftovers = f" Removed {swept} leftover files." if swept else ""
        self.stdout.write(f"Archived {result.records_archived} records in {result.batches} batches.{more}{leftovers}")

    def _verify(self) -> None:
        problems = history_archive_verify_all()
        if problems:
            raise CommandError("Archives that do not match their manifest:\n" + "\n".join(problems))
        self.stdout.write("Every archive matches its manifest (checksum and count).")
