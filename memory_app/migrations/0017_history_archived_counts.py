"""Per-day counts of archived history records, so the timeline counts a record the same after it is archived.

The counts of archives made before this migration are read from their files (verified against the manifest);
an archive whose file cannot be read or does not match is left without counts and named on the console (the
integrity check reports it too).
"""

import datetime as dt
import gzip
import hashlib
import json

import django.db.models.deletion
from django.core.files.storage import default_storage
from django.db import migrations, models


def _step(line):
    details = line.get("details")
    if line.get("action") != "workflow_step_completed" or not isinstance(details, dict):
        return ""
    step = details.get("step")
    return step[:64] if isinstance(step, str) else ""


def backfill_counts(apps, schema_editor):
    archives = apps.get_model("memory_app", "HistoryArchive")
    counts = apps.get_model("memory_app", "HistoryArchivedCount")
    for archive in archives.objects.filter(record_count__gt=0).exclude(file_name="").iterator():
        try:
            with default_storage.open(archive.file_name, "rb") as handle:
                raw = handle.read()
            data = gzip.decompress(raw) if archive.compressed else raw
        except (OSError, EOFError) as exc:
            print(f"\n  history archive {archive.pk} ({archive.file_name}) unreadable, no counts: {exc}")
            continue
        if hashlib.sha256(data).hexdigest() != archive.checksum:
            print(f"\n  history archive {archive.pk} ({archive.file_name}) does not match its manifest, no counts")
            continue
        groups = {}
        for raw_line in data.splitlines():
            if not raw_line:
                continue
            line = json.loads(raw_line)
            moment = dt.datetime.fromisoformat(line["timestamp"]).astimezone(dt.UTC)
            groups.setdefault((moment.date(), line["action"], _step(line)), []).append(moment)
        counts.objects.bulk_create(
            [
                counts(
                    archive=archive,
                    scope=archive.scope,
                    day=day,
                    action=action,
                    step=step,
                    record_count=len(moments),
                    first_timestamp=min(moments),
                    last_timestamp=max(moments),
                )
                for (day, action, step), moments in sorted(groups.items())
            ],
            batch_size=500,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("memory_app", "0016_released_contexts"),
    ]

    operations = [
        migrations.CreateModel(
            name="HistoryArchivedCount",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("scope", models.CharField(max_length=64)),
                ("day", models.DateField()),
                ("action", models.SlugField(db_index=False, max_length=64)),
                ("step", models.CharField(blank=True, default="", max_length=64)),
                ("record_count", models.PositiveIntegerField()),
                ("first_timestamp", models.DateTimeField()),
                ("last_timestamp", models.DateTimeField()),
                (
                    "archive",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="counts",
                        to="memory_app.historyarchive",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["scope", "day"], name="history_archived_scope_day")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("archive", "day", "action", "step"),
                        name="history_archived_count_archive_day_action_step",
                    )
                ],
            },
        ),
        migrations.RunPython(backfill_counts, migrations.RunPython.noop),
    ]
