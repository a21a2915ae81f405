"""Backups of the memory (``workflow.auto_backup``): a verified export of every table, restorable into an empty
database.

A backup is two files in the default Django storage under ``workflow.backup_location``:
``memory-<UTC time>.jsonl.gz`` (Django's JSON Lines serializer over the users and groups, then every memory_app
model in dependency order; gzip) and ``memory-<UTC time>.json``, its manifest: the sha256 of the uncompressed
lines, the object count of every model, and ``verified``. The manifest is written last, after the data file was
read back from the storage and matched both; a backup without a manifest is incomplete and never listed.

Left out: the cache tables (derived data: their blobs are not in the backup; a restored lookup is a miss that
recomputes), the history day counts (database triggers rebuild them as the records are restored) and the files
the history archive manifests name (they live in the storage, not the database).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from django.apps import apps
from django.conf import settings
from django.core import serializers
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.management.color import no_style
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Model
from django.utils import timezone

logger = logging.getLogger("memory_app.backups")

FORMAT_VERSION = 1
# Derived data: never backed up, never required empty for a restore. The history day counts are kept by database
# triggers on the history records: restoring the records rebuilds them.
EXCLUDED_MODELS = {"memory_app.cacheentry", "memory_app.cachestatistics", "memory_app.historydailycount"}


class BackupError(Exception):
    """A backup that cannot be written, verified, found or restored; the message says which and why."""


@dataclass
class Backup:
    name: str
    data_file: str
    created_at: str
    sha256: str
    counts: dict[str, int] = field(default_factory=dict)
    size_bytes: int = 0
    verified: bool = False
    version: int = FORMAT_VERSION

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def backup_models() -> list[type[Model]]:
    """The backed-up models, each after every model it refers to (users and groups first)."""
    app_list = [
        (apps.get_app_config("auth"), [apps.get_model("auth", "Group"), apps.get_model("auth", "User")]),
        (
            apps.get_app_config("memory_app"),
            [
                model
                for model in apps.get_app_config("memory_app").get_models()
                if model._meta.label_lower not in EXCLUDED_MODELS
            ],
        ),
    ]
    ordered: list[type[Model]] = serializers.sort_dependencies(app_list, allow_cycles=True)
    return ordered


def _location() -> str:
    return settings.MEMORY.workflow.backup_location


class _ExactEncoder(DjangoJSONEncoder):
    """Django's encoder cuts datetimes to milliseconds; a backup keeps every microsecond (a restore must give
    back the same ``last_updated`` the release compare-and-set reads)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, dt.datetime | dt.time):
            return o.isoformat()
        return super().default(o)


class _HashingWriter(io.TextIOBase):
    """The serializer's text stream: hashes the lines and writes them gzip-compressed."""

    def __init__(self, target: IO[bytes]) -> None:
        super().__init__()
        self._gzip = gzip.GzipFile(fileobj=target, mode="wb")
        self.digest = hashlib.sha256()

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.digest.update(data)
        self._gzip.write(data)
        return len(text)

    def finish(self) -> None:
        self._gzip.close()


def _counted(objects: Iterator[Model], counts: dict[str, int], label: str) -> Iterator[Model]:
    for item in objects:
        counts[label] = counts.get(label, 0) + 1
        yield item


def _read_lines(data_file: str) -> tuple[str, dict[str, int]]:
    """Checksum and per-model counts of a stored data file, read back from the storage."""
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    with default_storage.open(data_file, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as lines:
        for line in lines:
            digest.update(line)
            if line.strip():
                label = str(json.loads(line)["model"])
                counts[label] = counts.get(label, 0) + 1
    return digest.hexdigest(), counts


def backup_create(*, now: dt.datetime | None = None) -> Backup:
    """Write, read back and verify a backup; raises BackupError (and leaves no manifest) when it does not match."""
    moment = now or timezone.now()
    stamp = moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"memory-{stamp}"
    counts: dict[str, int] = {}
    with tempfile.TemporaryFile() as spool:
        writer = _HashingWriter(spool)
        outermost = not connection.in_atomic_block
        with transaction.atomic():
            if connection.vendor == "postgresql" and outermost:
                # One snapshot for every table: rows written during the backup are all in it or all out.
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for model in backup_models():
                label = model._meta.label_lower
                counts[label] = 0
                objects = model._default_manager.order_by("pk").iterator(chunk_size=1000)
                serializers.serialize(
                    "jsonl",
                    _counted(objects, counts, label),
                    stream=writer,
                    use_natural_foreign_keys=True,
                    cls=_ExactEncoder,
                )
        writer.finish()
        size = spool.tell()
        spool.seek(0)
        data_file = default_storage.save(f"{_location()}/{name}.jsonl.gz", File(spool))
    backup = Backup(
        name=name,
        data_file=data_file,
        created_at=moment.isoformat(),
        sha256=writer.digest.hexdigest(),
        counts=counts,
        size_bytes=size,
    )
    checksum, stored_counts = _read_lines(data_file)
    if checksum != backup.sha256 or {label: n for label, n in counts.items() if n} != stored_counts:
        default_storage.delete(data_file)
        raise BackupError(f"backup {name}: the stored file does not match what was written; it was removed")
    backup.verified = True
    manifest = json.dumps(backup.as_dict(), indent=2, sort_keys=True).encode("utf-8")
    default_storage.save(f"{_location()}/{name}.json", File(io.BytesIO(manifest)))
    logger.info("backup %s written and verified: %d objects, %d bytes", name, backup.total, size)
    return backup


def backup_list() -> list[Backup]:
    """The complete backups (those with a manifest), newest first."""
    try:
        _, files = default_storage.listdir(_location())
    except FileNotFoundError:
        return []
    backups = []
    for file_name in files:
        if file_name.startswith("memory-") and file_name.endswith(".json"):
            try:
                backups.append(_manifest(file_name[: -len(".json")]))
            except BackupError:
                continue
    return sorted(backups, key=lambda backup: backup.name, reverse=True)


def _manifest(name: str) -> Backup:
    path = f"{_location()}/{name}.json"
    try:
        with default_storage.open(path, "rb") as handle:
            document = json.loads(handle.read())
        return Backup(**document)
    except (OSError, ValueError, TypeError) as exc:
        raise BackupError(f"no readable backup named {name!r} in {_location()}/ ({exc})") from None


def backups_prune(*, keep: int | None = None) -> int:
    """Delete the oldest backups beyond ``workflow.backup_keep``; returns how many went."""
    keep = settings.MEMORY.workflow.backup_keep if keep is None else keep
    doomed = backup_list()[keep:]
    for backup in doomed:
        default_storage.delete(backup.data_file)
        default_storage.delete(f"{_location()}/{backup.name}.json")
    return len(doomed)


def database_is_empty() -> bool:
    return not any(model._default_manager.exists() for model in backup_models())


def backup_restore(*, name: str, replace: bool = False) -> Backup:
    """Load backup ``name`` (verified first: checksum and counts) into this database, in one transaction.

    Refuses a database that holds any backed-up row unless ``replace``, which deletes those rows first.
    """
    backup = _manifest(name)
    checksum, counts = _read_lines(backup.data_file)
    expected = {label: n for label, n in backup.counts.items() if n}
    if checksum != backup.sha256 or counts != expected:
        raise BackupError(f"backup {name}: the data file does not match its manifest (checksum or counts)")
    models = backup_models()
    with transaction.atomic():
        if not database_is_empty():
            if not replace:
                raise BackupError(
                    "the database is not empty: restore into an empty database, or pass --replace to delete "
                    "the users, groups and memory data it holds first"
                )
            for model in reversed(models):
                model._default_manager.all().delete()
        loaded = _load(backup.data_file)
    logger.warning("backup %s restored: %d objects", name, loaded)
    return backup


def _load(data_file: str) -> int:
    database = connections[DEFAULT_DB_ALIAS]
    loaded = 0
    touched: set[type[Model]] = set()
    deferred = []
    with default_storage.open(data_file, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as lines:
        text = io.TextIOWrapper(lines, encoding="utf-8")
        with database.constraint_checks_disabled():
            for item in serializers.deserialize("jsonl", text, handle_forward_references=True):
                item.save()
                if item.deferred_fields:
                    deferred.append(item)
                touched.add(type(item.object))
                loaded += 1
            for item in deferred:
                item.save_deferred_fields()
    database.check_constraints(table_names=[model._meta.db_table for model in touched])
    # Explicit primary keys: move the sequences past them (PostgreSQL), as loaddata does.
    statements = database.ops.sequence_reset_sql(no_style(), list(touched))
    if statements:
        with database.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    return loaded
