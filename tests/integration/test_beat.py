"""The maintenance schedules after a real `migrate`, and a real `celery beat` start that brings them in line with
memory_config.yaml: an interval edited in the admin goes back to the file's, a disabled row stays disabled."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPECTED = {
    "cache-cleanup-text_analysis": ("memory_app.cache_cleanup", 300),
    "cache-cleanup-api_responses": ("memory_app.cache_cleanup", 300),
    "cache-cleanup-images": ("memory_app.cache_cleanup", 3600),
    "memory-backup": ("memory_app.backup", 1800),
    "history-archive": ("memory_app.history_archive", 3600),
    "contexts-release": ("memory_app.contexts_release", 3600),
    "memory-optimize": ("memory_app.memory_optimize", 300),
    "metrics-snapshot": ("memory_app.metrics_snapshot", 300),
    "integrity-check": ("memory_app.integrity_check", 86400),
    "workflows-recover": ("workflows.recover", 10),
    "workflows-detect-stuck": ("workflows.detect_stuck", 300),
    "storage-deletions-sweep": ("memory_app.storage_deletions_sweep", 300),
    "outputs-expire": ("memory_app.outputs_expire", 3600),
}


def schedules(database: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT task.name, task.task, interval.every FROM django_celery_beat_periodictask task "
            "JOIN django_celery_beat_intervalschedule interval ON task.interval_id = interval.id "
            "WHERE interval.period = 'seconds'"
        ).fetchall()
    return {name: (task, every) for name, task, every in rows}


def test_schedules_exist_after_migrate_and_a_beat_start_brings_an_edited_interval_back(tmp_path):
    database = tmp_path / "fresh.sqlite3"
    env = {key: value for key, value in os.environ.items() if key not in {"CELERY_BROKER_URL", "REDIS_URL"}}
    env.update(
        DJANGO_SETTINGS_MODULE="comicmem_site.settings.test",
        DATABASE_URL=f"sqlite:///{database}",
        COMICMEM_VAR_DIR=str(tmp_path / "var"),
        PYTHONUNBUFFERED="1",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO_ROOT, env=env, check=True, capture_output=True
    )

    assert {name: row for name, row in schedules(database).items() if name in EXPECTED} == EXPECTED

    # Staff edit in the admin (the model's save, which also tells a running beat that the schedule changed).
    edit = (
        "from django_celery_beat.models import IntervalSchedule, PeriodicTask\n"
        "task = PeriodicTask.objects.get(name='cache-cleanup-images')\n"
        "task.interval = IntervalSchedule.objects.create(every=999, period='seconds')\n"
        "task.save()\n"
        "PeriodicTask.objects.filter(name='integrity-check').update(enabled=False)\n"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", edit], cwd=REPO_ROOT, env=env, check=True)
    log_path = tmp_path / "beat.log"
    with log_path.open("wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "comicmem_site", "beat", "--loglevel=DEBUG"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and b"DatabaseScheduler: Schedule changed" not in log_path.read_bytes():
                if b"beat: Starting" in log_path.read_bytes() and b"Writing entries" in log_path.read_bytes():
                    break
                time.sleep(0.5)
            time.sleep(2)
        finally:
            beat.terminate()
            beat.wait(timeout=30)
    output = log_path.read_text(errors="replace")
    assert "beat: Starting" in output, output
    # The scheduler read its entries from the database (and, with no settings dict, wrote none over them).
    assert "DatabaseScheduler: Fetching database schedule" in output, output

    after = schedules(database)
    assert "beat schedules follow the configuration" in output, output
    assert {name: row for name, row in after.items() if name in EXPECTED} == EXPECTED
    assert "cache-cleanup" not in after
    with sqlite3.connect(database) as connection:
        [(enabled,)] = connection.execute(
            "SELECT enabled FROM django_celery_beat_periodictask WHERE name = 'integrity-check'"
        ).fetchall()
    assert not enabled
