"""The cache seen from several real processes: shared statistics and values, and a writer killed mid-blob."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.core.cache import cache as shared_cache

from memory_app.models import CacheEntry
from memory_app.services.cache import (
    cache_cleanup,
    cache_counters_read,
    cache_get,
    cache_lookup,
    cache_set_stream,
)
from tests.conftest import REPO_ROOT, subprocess_env

pytestmark = [pytest.mark.integration]

CHILD_OPERATIONS = """
from memory_app.services.cache import cache_get, cache_set
cache_set(namespace="text_analysis", key="shared", value={"from": "child"})
for _ in range(3):
    assert cache_get(namespace="text_analysis", key="shared") == {"from": "child"}
cache_get(namespace="text_analysis", key="absent-1")
cache_get(namespace="text_analysis", key="absent-2")
print("child done")
"""


def run_child(script: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("child done"), result.stdout


CHILD_CLEAR = """
from memory_app.services.cache import cache_clear
assert cache_clear(namespace="text_analysis") == 1
print("child done")
"""


def assert_a_clear_elsewhere_is_seen_here(env: dict[str, str]) -> None:
    assert cache_lookup(namespace="text_analysis", key="shared").hit is True
    run_child(CHILD_CLEAR, env)
    assert cache_lookup(namespace="text_analysis", key="shared").hit is False


def assert_both_processes_counted(client) -> None:
    # The value the child wrote is here, and both processes' lookups add up.
    assert cache_get(namespace="text_analysis", key="shared") == {"from": "child"}
    assert cache_lookup(namespace="text_analysis", key="absent-3").hit is False
    stats = client.get("/api/memory/cache/stats").json()["data"]["caches"]["text_analysis"]
    assert (stats["hits"], stats["misses"], stats["current_size"]) == (4, 3, 1)
    assert (stats["hit_rate"], stats["hit_rate_value"]) == ("57.1%", 0.5714)


def test_statistics_from_two_processes_agree_embedded(transactional_db, settings, tmp_path, staff_client):
    # The embedded mode as `make run` has it: local settings, the file-based Django cache under var/.
    var = tmp_path / "var"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(var / "django_cache"),
            "KEY_PREFIX": "comicmem",
        }
    }
    settings.CACHE_DIR = tmp_path / "cache"
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="comicmem_site.settings.local",
        COMICMEM_VAR_DIR=str(var),
        CACHE_DIR=str(tmp_path / "cache"),
    )
    env.pop("REDIS_URL", None)

    run_child(CHILD_OPERATIONS, env)

    assert_both_processes_counted(staff_client)
    assert_a_clear_elsewhere_is_seen_here(env)


def test_statistics_from_two_processes_agree_on_redis(transactional_db, settings, tmp_path, staff_client, redis_url):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": "comicmem",
        }
    }
    settings.CACHE_DIR = tmp_path / "cache"
    shared_cache.clear()
    try:
        env = subprocess_env(REDIS_URL=redis_url, CACHE_DIR=str(tmp_path / "cache"))
        run_child(CHILD_OPERATIONS, env)
        assert_both_processes_counted(staff_client)
        assert_a_clear_elsewhere_is_seen_here(env)
    finally:
        shared_cache.clear()


WRITER = """
import sys
from memory_app.services.cache import cache_set_stream
print("writing", flush=True)
cache_set_stream(namespace="images", key="big", source=sys.stdin.buffer, content_type="image/png")
print("child done", flush=True)
"""


def test_a_killed_writer_leaves_no_valid_looking_half_blob(transactional_db, settings, tmp_path):
    root = tmp_path / "cache"
    settings.CACHE_DIR = root
    child = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", WRITER],
        cwd=REPO_ROOT,
        env=subprocess_env(CACHE_DIR=str(root)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    chunk = b"\x89PNG" + b"\x00" * (64 * 1024 - 4)

    def feed() -> None:
        # 3 MiB, then the pipe stays open: the writer waits for the rest of the image and is killed there.
        with contextlib.suppress(BrokenPipeError, ValueError):
            for _ in range(48):
                child.stdin.write(chunk)
            child.stdin.flush()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    temporary = root / "ai_images" / ".tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        written = [path.stat().st_size for path in temporary.glob("*")] if temporary.is_dir() else []
        if written and written[0] >= 2 * 1024 * 1024:
            break
        assert child.poll() is None, child.stdout.read().decode(errors="replace")
        time.sleep(0.05)
    else:
        child.kill()
        pytest.fail("the writer never got 2 MiB into its temporary file")

    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    with contextlib.suppress(BrokenPipeError):
        child.stdin.close()
    child.stdout.close()

    # Nothing reads as valid: no row, no blob under a final name, a lookup misses.
    assert CacheEntry.objects.count() == 0
    files = [path for path in root.rglob("*") if path.is_file()]
    assert [path.parent for path in files] == [temporary]
    assert cache_lookup(namespace="images", key="big").hit is False

    # Cleanup removes the dead writer's leftovers once they are past the grace period.
    left_behind = files[0].stat().st_size
    assert left_behind >= 2 * 1024 * 1024
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"cache_options": settings.MEMORY.cache_options.model_copy(update={"orphan_grace_seconds": 0})}
    )
    report = cache_cleanup()
    assert (report.temporary_files, report.orphaned_blobs, report.bytes_freed) == (1, 0, left_behind)
    assert not files[0].exists()

    # The same key written in full afterwards is served.
    cache_set_stream(namespace="images", key="big", source=io.BytesIO(chunk * 4), content_type="image/png")
    assert cache_get(namespace="images", key="big") == chunk * 4


IDLE_CHILD = """
import time
from memory_app.services.cache import cache_get, cache_set
cache_set(namespace="text_analysis", key="k", value=1)
cache_get(namespace="text_analysis", key="k")
cache_get(namespace="text_analysis", key="absent")
print("idle", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_an_idle_process_hands_over_its_statistics_within_the_flush_interval(transactional_db, settings, tmp_path):
    config = tmp_path / "memory_config.yaml"
    config.write_text("memory:\n  cache_options:\n    stats_flush_interval: 1\n", encoding="utf-8")
    var = tmp_path / "var"
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="comicmem_site.settings.local",
        COMICMEM_VAR_DIR=str(var),
        CACHE_DIR=str(tmp_path / "cache"),
        MEMORY_CONFIG_FILE=str(config),
    )
    env.pop("REDIS_URL", None)
    child = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", IDLE_CHILD],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert child.stdout.readline().strip() == b"idle"
        idle_since = time.monotonic()
        counts = None
        while time.monotonic() - idle_since < 10:
            counts = cache_counters_read(namespace="text_analysis")
            if counts["hits"] or counts["misses"]:
                break
            time.sleep(0.1)
        waited = time.monotonic() - idle_since
        # Seen while the child still runs, before any exit handler: the timer flushed it.
        assert child.poll() is None
        assert counts == {"hits": 1, "misses": 1, "corrupted": 0, "evictions": 0}
        assert waited < 3
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
