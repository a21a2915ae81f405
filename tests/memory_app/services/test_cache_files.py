from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import os
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from memory_app.errors import NotFound
from memory_app.models import CacheEntry
from memory_app.services.cache import (
    cache_cleanup,
    cache_clear,
    cache_counters_read,
    cache_get,
    cache_key,
    cache_lookup,
    cache_open,
    cache_set,
    cache_set_stream,
    cache_statistics_flush,
)
from memory_app.services.cache import reads as cache_reads

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def images(cache_namespaces, cache_root):
    cache_namespaces(
        images={"backend": "file", "ttl": 3600, "directory": "cache/ai_images", "max_disk_usage": 10_000},
        packed={"backend": "file", "ttl": 3600, "compress_threshold": 100},
    )
    return cache_root / "cache" / "ai_images"


def counts(namespace: str) -> dict[str, int]:
    cache_statistics_flush()
    return cache_counters_read(namespace=namespace)


def files_under(root) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def blob_of(directory, entry: CacheEntry):
    return directory / entry.blob_name[:2] / entry.blob_name


def test_a_blob_and_its_entry(images, cache_root):
    before = timezone.now()
    assert cache_set(namespace="images", key={"prompt": "a cat"}, value=PNG, content_type="image/png") is True

    entry = CacheEntry.objects.get()
    digest = cache_key(namespace="images", key={"prompt": "a cat"})
    checksum = hashlib.sha256(PNG).hexdigest()
    assert (entry.namespace, entry.key, entry.size_bytes, entry.content_type) == ("images", digest, 1032, "image/png")
    assert (entry.checksum, entry.compressed, entry.hit_count) == (checksum, False, 0)
    assert entry.blob_name == f"{digest}-{checksum[:16]}"
    assert entry.expires_at == entry.created_at + dt.timedelta(seconds=3600)
    assert entry.created_at >= before
    assert files_under(cache_root) == [f"cache/ai_images/{digest[:2]}/{entry.blob_name}"]
    assert blob_of(images, entry).read_bytes() == PNG

    assert cache_get(namespace="images", key={"prompt": "a cat"}) == PNG
    cache_statistics_flush()  # hit counts and access times are batched per process, like the statistics
    entry.refresh_from_db()
    assert entry.hit_count == 1
    assert entry.last_accessed_at > entry.created_at
    assert counts("images") == {"hits": 1, "misses": 0, "corrupted": 0, "evictions": 0}


def test_json_values_in_a_file_namespace(images):
    cache_set(namespace="images", key="meta", value={"panels": [1, 2], "title": "第一话"})
    assert CacheEntry.objects.get().content_type == "application/json"
    assert cache_get(namespace="images", key="meta") == {"panels": [1, 2], "title": "第一话"}


def test_a_flipped_byte_is_detected(images):
    cache_set(namespace="images", key="k", value=PNG, content_type="image/png")
    entry = CacheEntry.objects.get()
    blob = blob_of(images, entry)
    data = bytearray(blob.read_bytes())
    data[500] ^= 0x01
    blob.write_bytes(bytes(data))

    assert cache_lookup(namespace="images", key="k").hit is False
    assert CacheEntry.objects.count() == 0
    assert not blob.exists()
    assert counts("images") == {"hits": 0, "misses": 1, "corrupted": 1, "evictions": 0}


def test_a_truncated_or_missing_blob_is_a_miss(images):
    cache_set(namespace="images", key="short", value=PNG)
    cache_set(namespace="images", key="gone", value=PNG + b"!")
    short, gone = CacheEntry.objects.order_by("created_at", "id")
    blob_of(images, short).write_bytes(PNG[:100])
    blob_of(images, gone).unlink()

    assert cache_lookup(namespace="images", key="short").hit is False
    assert cache_lookup(namespace="images", key="gone").hit is False
    assert CacheEntry.objects.count() == 0
    assert counts("images")["corrupted"] == 2


def test_a_blob_longer_than_its_row_says_is_a_miss(images):
    # The hit reads the size the row names and one byte more: bytes appended to a blob are caught.
    cache_set(namespace="images", key="grown", value=PNG)
    blob = blob_of(images, CacheEntry.objects.get())
    blob.write_bytes(PNG + b"\x00")

    assert cache_lookup(namespace="images", key="grown").hit is False
    assert CacheEntry.objects.count() == 0
    assert counts("images")["corrupted"] == 1


def test_expired_entries_are_misses(images):
    cache_set(namespace="images", key="k", value=PNG, ttl=10)
    CacheEntry.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert cache_lookup(namespace="images", key="k").hit is False
    assert counts("images")["misses"] == 1


def test_max_disk_usage_evicts_least_recently_used(images):
    value = b"x" * 3000
    for name in ("a", "b", "c"):
        cache_set(namespace="images", key=name, value=value + name.encode())
    blob_b = blob_of(images, CacheEntry.objects.get(key=cache_key(namespace="images", key="b")))
    CacheEntry.objects.filter(key=cache_key(namespace="images", key="a")).update(
        last_accessed_at=timezone.now() + dt.timedelta(seconds=1)
    )  # a was read most recently

    cache_set(namespace="images", key="d", value=value + b"d")  # 4 x 3001 > 10,000: one must go

    assert [cache_lookup(namespace="images", key=name).hit for name in "abcd"] == [True, False, True, True]
    assert not blob_b.exists()
    assert sum(CacheEntry.objects.values_list("size_bytes", flat=True)) == 9003
    assert counts("images")["evictions"] == 1


def test_a_value_larger_than_max_disk_usage_is_not_stored(images, cache_root):
    cache_set(namespace="images", key="small", value=b"s")
    assert cache_set(namespace="images", key="huge", value=b"h" * 10_001) is False
    assert list(CacheEntry.objects.values_list("size_bytes", flat=True)) == [1]
    assert len(files_under(cache_root)) == 1


def test_rewriting_a_key_replaces_its_blob(images, cache_root):
    cache_set(namespace="images", key="k", value=b"first")
    cache_set(namespace="images", key="k", value=b"second")
    assert cache_get(namespace="images", key="k") == b"second"
    entry = CacheEntry.objects.get()
    assert files_under(images) == [f"{entry.blob_name[:2]}/{entry.blob_name}"]


def test_compression_over_the_threshold(images, cache_root):
    text = "同一句话。" * 500
    cache_set(namespace="packed", key="long", value={"text": text})
    cache_set(namespace="packed", key="short", value="tiny")
    long_entry = CacheEntry.objects.get(key=cache_key(namespace="packed", key="long"))
    blob = blob_of(cache_root / "packed", long_entry)
    assert long_entry.compressed is True
    assert long_entry.size_bytes == blob.stat().st_size < 300
    assert gzip.decompress(blob.read_bytes()) == f'{{"text":"{text}"}}'.encode()
    assert CacheEntry.objects.get(key=cache_key(namespace="packed", key="short")).compressed is False
    assert cache_get(namespace="packed", key="long") == {"text": text}
    assert cache_get(namespace="packed", key="short") == "tiny"


def test_streams_in_and_out(images):
    source = io.BytesIO(PNG * 2000)  # 2 MB, written and verified chunk by chunk
    # "packed" has no disk limit; PNG is compressed already, so it is stored as it is.
    assert cache_set_stream(namespace="packed", key="big", source=source, content_type="image/png") is True
    assert CacheEntry.objects.get().compressed is False
    with pytest.raises(NotFound):
        cache_open(namespace="nope", key="big")
    handle = cache_open(namespace="packed", key="big")
    with handle:
        assert handle.read() == PNG * 2000
    assert cache_open(namespace="packed", key="other") is None
    # Text over the threshold is gzip-compressed on the way in and read back through a decompressing stream.
    cache_set_stream(namespace="packed", key="text", source=io.BytesIO(b"abc" * 100_000), content_type="text/plain")
    with cache_open(namespace="packed", key="text") as handle:
        assert handle.read() == b"abc" * 100_000


@pytest.mark.parametrize("key", ["../../etc/passwd", "/etc/passwd", "a/b\\c", "nul\x00byte", "..", "C:\\x"])
def test_keys_never_make_paths(images, cache_root, key):
    cache_set(namespace="images", key=key, value=b"v")
    assert cache_get(namespace="images", key=key) == b"v"
    files = files_under(cache_root.parent)
    digest = cache_key(namespace="images", key=key)
    assert files == [f"cache/cache/ai_images/{digest[:2]}/{CacheEntry.objects.get().blob_name}"]


@pytest.mark.parametrize("namespace", ["../images", "/tmp/x", "images/../../x", "images\x00", "cache/ai_images"])
def test_namespaces_with_paths_touch_nothing(images, cache_root, namespace):
    with pytest.raises(NotFound):
        cache_set(namespace=namespace, key="k", value=b"v")
    with pytest.raises(NotFound):
        cache_lookup(namespace=namespace, key="k")
    assert files_under(cache_root.parent) == []
    assert CacheEntry.objects.count() == 0


def test_clear_removes_rows_and_blobs(images, staff_user):
    cache_set(namespace="images", key="a", value=b"a")
    cache_set(namespace="images", key="b", value=b"b")
    cache_set(namespace="packed", key="a", value=b"a")
    assert cache_clear(namespace="images", user=staff_user) == 2
    assert list(CacheEntry.objects.values_list("namespace", flat=True)) == ["packed"]
    assert files_under(images) == []


def test_cleanup_removes_expired_orphans_and_old_temporary_files(images, settings):
    cache_set(namespace="images", key="fresh", value=b"fresh")
    cache_set(namespace="images", key="old", value=b"old!!")
    CacheEntry.objects.filter(key=cache_key(namespace="images", key="old")).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    old_orphan = images / "ab" / ("ab" + "0" * 62 + "-" + "1" * 16)
    old_orphan.parent.mkdir(parents=True, exist_ok=True)
    old_orphan.write_bytes(b"o" * 10)
    young_orphan = images / "cd" / ("cd" + "0" * 62 + "-" + "2" * 16)
    young_orphan.parent.mkdir(parents=True, exist_ok=True)
    young_orphan.write_bytes(b"y" * 20)
    (images / ".tmp").mkdir(exist_ok=True)
    old_temporary = images / ".tmp" / "dead-writer"
    old_temporary.write_bytes(b"t" * 7)
    young_temporary = images / ".tmp" / "live-writer"
    young_temporary.write_bytes(b"t" * 3)
    an_hour_ago = time.time() - 3601
    for path in (old_orphan, old_temporary):
        os.utime(path, (an_hour_ago, an_hour_ago))

    report = cache_cleanup()

    assert report.as_dict() == {
        "expired_entries": 1,
        "orphaned_blobs": 1,
        "temporary_files": 1,
        "bytes_freed": 5 + 10 + 7,
        "more": False,
    }
    assert [path.exists() for path in (old_orphan, young_orphan, old_temporary, young_temporary)] == [
        False,
        True,
        False,
        True,
    ]
    assert cache_get(namespace="images", key="fresh") == b"fresh"
    assert CacheEntry.objects.count() == 1


def test_cleanup_in_batches_says_when_more_is_left(images):
    for index in range(5):
        cache_set(namespace="images", key=index, value=b"v%d" % index)
    CacheEntry.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    first = cache_cleanup(batch_size=2, max_batches=1)
    assert (first.expired_entries, first.more) == (2, True)
    second = cache_cleanup(batch_size=2, max_batches=2)
    assert (second.expired_entries, second.more) == (3, False)
    assert CacheEntry.objects.count() == 0


def test_cleanup_command_reports_what_it_freed(images, capsys):
    cache_set(namespace="images", key="old", value=b"x" * 2048)
    CacheEntry.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    call_command("cache_cleanup")
    assert capsys.readouterr().out == (
        "Removed 1 expired entries, 0 orphaned blobs and 0 temporary files; freed 2.0KB (2048 bytes).\n"
    )
    call_command("cache_cleanup", "--json")
    assert capsys.readouterr().out == (
        '{"expired_entries": 0, "orphaned_blobs": 0, "temporary_files": 0, "bytes_freed": 0, "more": false}\n'
    )


# --- hit bookkeeping, batched per process ---------------------------------------------------------------------


@pytest.fixture
def batched(settings, images):
    """Hit counts and access times wait for a flush (an interval no test reaches)."""
    options = settings.MEMORY.cache_options.model_copy(update={"stats_flush_interval": 3600})
    settings.MEMORY = settings.MEMORY.model_copy(update={"cache_options": options})
    cache_statistics_flush()  # start from nothing pending


def test_a_file_hit_reads_the_database_and_writes_nothing_until_the_flush(batched):
    cache_set(namespace="images", key="k", value=PNG)
    entry = CacheEntry.objects.get()

    with CaptureQueriesContext(connection) as captured:
        assert cache_get(namespace="images", key="k") == PNG
        assert cache_get(namespace="images", key="k") == PNG
    noted_at = timezone.now()

    # The second hit, within entry_recheck_seconds of the first, reads the blob alone (see the tests below).
    assert [query["sql"].split()[0] for query in captured.captured_queries] == ["SELECT"]
    entry.refresh_from_db()
    assert (entry.hit_count, entry.last_accessed_at) == (0, entry.created_at)
    assert cache_counters_read(namespace="images")["hits"] == 0  # nor a write to the counters (Redis or rows)
    cache_statistics_flush()
    entry.refresh_from_db()
    assert entry.hit_count == 2
    assert entry.created_at < entry.last_accessed_at <= noted_at
    assert cache_counters_read(namespace="images") == {"hits": 2, "misses": 0, "corrupted": 0, "evictions": 0}


def test_a_flush_never_moves_an_access_time_back(batched):
    cache_set(namespace="images", key="k", value=PNG)
    cache_get(namespace="images", key="k")  # noted now
    later = timezone.now() + dt.timedelta(hours=1)
    CacheEntry.objects.update(last_accessed_at=later)  # another process's flush, with a later hit

    cache_statistics_flush()

    entry = CacheEntry.objects.get()
    assert (entry.hit_count, entry.last_accessed_at) == (1, later)


def test_eviction_counts_this_processs_pending_hits_as_recent_use(batched):
    value = b"x" * 3000
    for name in ("a", "b", "c"):
        cache_set(namespace="images", key=name, value=value + name.encode())
    assert cache_get(namespace="images", key="a") == value + b"a"  # pending, not yet written

    cache_set(namespace="images", key="d", value=value + b"d")  # 4 x 3001 > 10,000: the least recently used goes

    assert [cache_lookup(namespace="images", key=name).hit for name in "abcd"] == [True, False, True, True]


def test_hits_on_an_entry_removed_before_the_flush_are_dropped_quietly(batched):
    cache_set(namespace="images", key="k", value=PNG)
    cache_get(namespace="images", key="k")
    cache_clear(namespace="images")

    cache_statistics_flush()

    assert CacheEntry.objects.count() == 0
    assert counts("images")["hits"] == 1


def test_without_an_interval_every_hit_is_written_at_once(settings, images):
    options = settings.MEMORY.cache_options.model_copy(update={"stats_flush_interval": 0})
    settings.MEMORY = settings.MEMORY.model_copy(update={"cache_options": options})
    cache_set(namespace="images", key="k", value=PNG)

    cache_get(namespace="images", key="k")

    assert CacheEntry.objects.get().hit_count == 1


def test_rewriting_a_key_inside_a_transaction_leaves_the_transaction_usable(images):
    from django.db import transaction

    cache_set(namespace="images", key="k", value=b"first")
    with transaction.atomic():
        assert cache_set(namespace="images", key="k", value=b"second") is True
        # The duplicate key raised nothing, so the caller's transaction goes on.
        assert CacheEntry.objects.count() == 1
        cache_set(namespace="images", key="other", value=b"third")

    assert cache_get(namespace="images", key="k") == b"second"
    assert cache_get(namespace="images", key="other") == b"third"
    assert CacheEntry.objects.get(key=cache_key(namespace="images", key="k")).size_bytes == 6


def test_max_size_and_max_disk_usage_together(cache_namespaces, cache_root):
    cache_namespaces(images={"backend": "file", "directory": "cache/both", "max_size": 3, "max_disk_usage": 5000})
    directory = cache_root / "cache" / "both"
    for index, name in enumerate("abc"):
        cache_set(namespace="images", key=name, value=name.encode() * 2000)
        CacheEntry.objects.filter(key=cache_key(namespace="images", key=name)).update(
            last_accessed_at=timezone.now() - dt.timedelta(seconds=10 - index)
        )
    # Three rows of 2000 bytes: at max_size, over max_disk_usage already evicted a down to b and c.
    assert [cache_lookup(namespace="images", key=name).hit for name in "abc"] == [False, True, True]

    cache_set(namespace="images", key="d", value=b"d" * 1000)  # max_size is fine (3), 5000 bytes fit exactly

    assert [cache_lookup(namespace="images", key=name).hit for name in "bcd"] == [True, True, True]
    cache_set(namespace="images", key="e", value=b"e" * 100)  # 4 rows: b (least recent) goes for max_size

    assert sorted(CacheEntry.objects.values_list("size_bytes", flat=True)) == [100, 1000, 2000]
    assert [cache_lookup(namespace="images", key=name).hit for name in "bcde"] == [False, True, True, True]
    assert len(files_under(directory)) == 3


# --- a key hit lately: one verified read of its blob, no database ----------------------------------------------


def statements_of(function) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        result = function()
    return result, [query["sql"].split()[0] for query in captured.captured_queries]


def test_a_key_hit_again_within_the_recheck_interval_asks_the_database_nothing(batched):
    cache_set(namespace="images", key="k", value=PNG)
    assert statements_of(lambda: cache_get(namespace="images", key="k")) == (PNG, ["SELECT"])

    for _ in range(3):
        assert statements_of(lambda: cache_get(namespace="images", key="k")) == (PNG, [])

    cache_statistics_flush()
    assert CacheEntry.objects.get().hit_count == 4
    assert cache_counters_read(namespace="images") == {"hits": 4, "misses": 0, "corrupted": 0, "evictions": 0}


def test_a_value_another_process_removed_is_a_miss_at_once(images):
    cache_set(namespace="images", key="k", value=PNG)
    assert cache_get(namespace="images", key="k") == PNG
    entry = CacheEntry.objects.get()
    # Another process's cache_delete: the row, then the blob, without this process's cache functions.
    CacheEntry.objects.all().delete()
    blob_of(images, entry).unlink()

    assert cache_lookup(namespace="images", key="k").hit is False
    assert counts("images") == {"hits": 1, "misses": 1, "corrupted": 0, "evictions": 0}


def test_a_value_another_process_rewrote_is_read_anew(images):
    cache_set(namespace="images", key="k", value=b"first")
    assert cache_get(namespace="images", key="k") == b"first"
    first = CacheEntry.objects.get()
    # Another process's cache_set of another value: a new blob, the row updated, the old blob removed.
    digest = cache_key(namespace="images", key="k")
    checksum = hashlib.sha256(b"second").hexdigest()
    blob_name = f"{digest}-{checksum[:16]}"
    (images / blob_name[:2] / blob_name).write_bytes(b"second")
    CacheEntry.objects.filter(pk=first.pk).update(blob_name=blob_name, size_bytes=6, checksum=checksum)
    blob_of(images, first).unlink()

    assert cache_get(namespace="images", key="k") == b"second"
    assert cache_get(namespace="images", key="k") == b"second"
    assert counts("images") == {"hits": 3, "misses": 0, "corrupted": 0, "evictions": 0}


def test_a_blob_corrupted_after_a_hit_is_a_miss_and_goes(images):
    cache_set(namespace="images", key="k", value=PNG)
    assert cache_get(namespace="images", key="k") == PNG
    entry = CacheEntry.objects.get()
    blob = blob_of(images, entry)
    data = bytearray(blob.read_bytes())
    data[10] ^= 0x01
    blob.write_bytes(bytes(data))

    assert cache_lookup(namespace="images", key="k").hit is False
    assert CacheEntry.objects.count() == 0
    assert not blob.exists()
    assert counts("images") == {"hits": 1, "misses": 1, "corrupted": 1, "evictions": 0}


def test_an_entry_past_its_expiry_is_a_miss_without_a_recheck(images, monkeypatch):
    cache_set(namespace="images", key="k", value=PNG, ttl=60)
    assert cache_get(namespace="images", key="k") == PNG
    later = timezone.now() + dt.timedelta(seconds=61)
    monkeypatch.setattr(timezone, "now", lambda: later)

    assert cache_lookup(namespace="images", key="k").hit is False
    assert counts("images")["misses"] == 1


def test_a_row_removed_without_its_blob_is_seen_at_the_recheck(images, settings, monkeypatch):
    # Staff deleting the row in the admin leave the blob to cleanup: a process that hit the key lately keeps
    # answering it until its row is due for a recheck.
    cache_set(namespace="images", key="k", value=PNG)
    assert cache_get(namespace="images", key="k") == PNG
    CacheEntry.objects.all().delete()
    assert cache_get(namespace="images", key="k") == PNG

    clock = time.monotonic() + settings.MEMORY.cache_options.entry_recheck_seconds
    monkeypatch.setattr(cache_reads.time, "monotonic", lambda: clock)
    assert cache_lookup(namespace="images", key="k").hit is False


def test_this_processs_own_writes_and_deletes_are_seen_at_once(images):
    cache_set(namespace="images", key="k", value=PNG)
    assert cache_get(namespace="images", key="k") == PNG
    cache_set(namespace="images", key="k", value=PNG, ttl=0)  # the same bytes, the same blob, a new expiry

    with CaptureQueriesContext(connection) as captured:
        assert cache_get(namespace="images", key="k") == PNG
    assert len(captured.captured_queries) == 1  # the row read again

    cache_clear(namespace="images")
    cache_set(namespace="images", key="k", value=PNG)
    assert cache_get(namespace="images", key="k") == PNG
    cache_statistics_flush()
    assert CacheEntry.objects.get().hit_count == 1  # noted on the new row, not the cleared one


def test_without_a_recheck_interval_every_hit_asks_the_database(images, settings):
    options = settings.MEMORY.cache_options.model_copy(update={"entry_recheck_seconds": 0})
    settings.MEMORY = settings.MEMORY.model_copy(update={"cache_options": options})
    cache_set(namespace="images", key="k", value=PNG)

    for _ in range(2):
        assert statements_of(lambda: cache_get(namespace="images", key="k")) == (PNG, ["SELECT"])


# --- large blobs hit again: read beside the row's lookup ----------------------------------------------------


@pytest.fixture
def large(cache_namespaces, cache_root, monkeypatch, settings):
    """A file namespace, this process's blob guesses forgotten, every hit asking the database (as a hit does once
    its row is due for a recheck), and the threads that read blobs recorded."""
    cache_namespaces(large={"backend": "file", "ttl": 3600, "directory": "cache/large"})
    options = settings.MEMORY.cache_options.model_copy(update={"entry_recheck_seconds": 0})
    settings.MEMORY = settings.MEMORY.model_copy(update={"cache_options": options})
    monkeypatch.setattr(cache_reads, "_known_entries", cache_reads._KnownEntries())
    readers: list[str] = []
    read_and_hash = cache_reads._read_and_hash

    def recording(location: str, blob_name: str, size: int):
        readers.append(threading.current_thread().name)
        return read_and_hash(location, blob_name, size)

    monkeypatch.setattr(cache_reads, "_read_and_hash", recording)
    return readers


def blob_reader(name: str) -> bool:
    return name.startswith("comicmem-blob-read")


def test_a_large_blob_hit_again_is_read_on_a_helper_thread(large):
    value = os.urandom(300 * 1024)
    cache_set(namespace="large", key="page", value=value)

    assert cache_get(namespace="large", key="page") == value
    assert large == [threading.current_thread().name]  # the first hit in this process reads inline
    assert cache_get(namespace="large", key="page") == value
    assert cache_get(namespace="large", key="page") == value
    assert [blob_reader(name) for name in large] == [False, True, True]
    assert counts("large") == {"hits": 3, "misses": 0, "corrupted": 0, "evictions": 0}


def test_small_blobs_are_always_read_inline(large):
    cache_set(namespace="large", key="icon", value=PNG)
    for _ in range(3):
        assert cache_get(namespace="large", key="icon") == PNG
    assert not any(blob_reader(name) for name in large)


def test_a_key_rewritten_since_its_last_hit_returns_the_new_value(large):
    first, second = os.urandom(300 * 1024), os.urandom(300 * 1024)
    cache_set(namespace="large", key="page", value=first)
    assert cache_get(namespace="large", key="page") == first
    cache_set(namespace="large", key="page", value=second)  # a new blob; the guessed one is removed

    assert cache_get(namespace="large", key="page") == second
    assert cache_get(namespace="large", key="page") == second
    assert counts("large") == {"hits": 3, "misses": 0, "corrupted": 0, "evictions": 0}


def test_a_process_keeps_a_bounded_number_of_guesses(large, monkeypatch):
    monkeypatch.setattr(cache_reads._known_entries, "capacity", 2)
    values = {name: os.urandom(300 * 1024) for name in ("first", "second", "third")}
    for name, value in values.items():
        cache_set(namespace="large", key=name, value=value)
        assert cache_get(namespace="large", key=name) == value  # inline: each key's first hit here
    del large[:]

    for name in ("third", "second", "first"):
        assert cache_get(namespace="large", key=name) == values[name]
    # The oldest guess ("first") made room for the third; the other two are read beside their lookups.
    assert [blob_reader(name) for name in large] == [True, True, False]


def test_a_guessed_blob_that_no_longer_verifies_is_a_miss(large, cache_root):
    value = os.urandom(300 * 1024)
    cache_set(namespace="large", key="page", value=value)
    assert cache_get(namespace="large", key="page") == value
    entry = CacheEntry.objects.get()
    blob = blob_of(cache_root / "cache" / "large", entry)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))  # same name, same size, other bytes

    assert cache_lookup(namespace="large", key="page").hit is False
    assert blob_reader(large[-1])
    assert CacheEntry.objects.count() == 0
    assert not blob.exists()
    assert counts("large") == {"hits": 1, "misses": 1, "corrupted": 1, "evictions": 0}

    cache_set(namespace="large", key="page", value=value)
    del large[:]
    assert cache_get(namespace="large", key="page") == value
    assert not any(blob_reader(name) for name in large)  # the failed guess was forgotten


def test_a_forked_child_reads_guessed_blobs_on_threads_of_its_own(large, cache_root):
    value = os.urandom(300 * 1024)
    cache_set(namespace="large", key="page", value=value)
    cache_get(namespace="large", key="page")
    cache_get(namespace="large", key="page")  # the parent's helper thread exists now
    reads = cache_reads._known_entries
    digest = cache_key(namespace="large", key="page")
    directory = cache_root / "cache" / "large"

    pid = os.fork()
    if pid == 0:  # the child touches no database connection: the parent's would be shared
        code = 1
        try:
            started = reads.start("large", digest, directory)
            code = 0 if started is not None and started[1].result(timeout=10)[0] == value else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
