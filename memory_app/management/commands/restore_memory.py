"""Restore a backup written by backup_memory (or the memory-backup schedule) into this database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from memory_app.services.backups import BackupError, backup_list, backup_restore


class Command(BaseCommand):
    help = (
        "Verify backup NAME (checksum and counts against its manifest) and load it in one transaction. The "
        "database must hold no users and no memory data, unless --replace (which deletes them first)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="a backup name as backup_memory --list prints it (memory-…)")
        parser.add_argument(
            "--replace", action="store_true", help="delete the users, groups and memory data present first"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].removesuffix(".json").removesuffix(".jsonl.gz")
        try:
            backup = backup_restore(name=name, replace=options["replace"])
        except BackupError as exc:
            known = [backup.name for backup in backup_list()[:5]]
            hint = f" Recent backups: {', '.join(known)}." if known else " There is no complete backup."
            raise CommandError(f"{exc}.{hint}") from None
        self.stdout.write(f"Restored {backup.name}: {backup.total} objects.")
