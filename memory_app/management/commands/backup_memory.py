"""Write a verified backup of the memory now (what the memory-backup schedule does), or list the backups."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.services.backups import BackupError, backup_create, backup_list, backups_prune


class Command(BaseCommand):
    help = (
        "Export users, groups and every memory table (gzip JSON Lines) into workflow.backup_location in the "
        "default storage, read it back and verify checksum and counts, then keep the newest workflow.backup_keep."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--list", action="store_true", help="list the complete backups, newest first")
        parser.add_argument("--no-prune", action="store_true", help="keep every older backup")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            for backup in backup_list():
                self.stdout.write(f"{backup.name}  {backup.total} objects  {backup.size_bytes} bytes")
            return
        try:
            backup = backup_create()
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        pruned = 0 if options["no_prune"] else backups_prune()
        self.stdout.write(
            f"Backup {backup.name}: {backup.total} objects, {backup.size_bytes} bytes, verified. "
            f"Restore with: manage.py restore_memory {backup.name}"
            + (f" ({pruned} older backup(s) removed)" if pruned else "")
        )
