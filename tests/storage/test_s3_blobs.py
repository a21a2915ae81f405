"""Blobs on an S3-compatible store, over the real wire protocol (moto's server on loopback): the file cache,
outputs, signed URLs."""

from __future__ import annotations

import io
import os
import urllib.request

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from memory_app.blob_storage import blob_signed_url
from memory_app.models import CacheEntry
from memory_app.services.cache import (
    cache_cleanup,
    cache_counters_read,
    cache_get,
    cache_open,
    cache_set,
    cache_set_stream,
    cache_statistics_flush,
)
from memory_app.services.operations import integrity_check

pytestmark = pytest.mark.django_db


@pytest.fixture
def images(s3_storage, cache_namespaces):
    cache_namespaces(images={"backend": "file", "ttl": 3600, "directory": "ai_images"})
    return s3_storage


def test_a_file_entry_is_a_content_addressed_object_and_reads_back_verified(images, settings):
    value = os.urandom(2048)
    cache_set(namespace="images", key={"prompt": "小明"}, value=value)

    entry = CacheEntry.objects.get()
    assert images.keys("cache/") == [f"cache/ai_images/{entry.blob_name[:2]}/{entry.blob_name}"]
    assert entry.blob_name.endswith(entry.checksum[:16])
    assert cache_get(namespace="images", key={"prompt": "小明"}) == value
    # Nothing of the blob is kept on this machine: only the (empty) staging folder.
    local = [path for path in settings.CACHE_DIR.rglob("*") if path.is_file()]
    assert local == []


def test_an_object_changed_in_the_store_reads_as_a_miss_and_goes(images):
    cache_set(namespace="images", key="k", value=b"x" * 100)
    entry = CacheEntry.objects.get()
    images.client().put_object(
        Bucket="comicmem-test", Key=f"cache/ai_images/{entry.blob_name[:2]}/{entry.blob_name}", Body=b"y" * 100
    )

    assert cache_get(namespace="images", key="k") is None
    assert CacheEntry.objects.count() == 0
    assert images.keys("cache/") == []


def test_cleanup_removes_an_orphaned_object_past_its_grace(images, settings):
    cache_set(namespace="images", key="kept", value=b"k" * 10)
    images.client().put_object(Bucket="comicmem-test", Key="cache/ai_images/ab/ab-orphan", Body=b"o" * 7)
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"cache_options": settings.MEMORY.cache_options.model_copy(update={"orphan_grace_seconds": 0})}
    )

    report = cache_cleanup()

    assert (report.orphaned_blobs, report.bytes_freed) == (1, 7)
    entry = CacheEntry.objects.get()
    assert images.keys("cache/") == [f"cache/ai_images/{entry.blob_name[:2]}/{entry.blob_name}"]


def test_an_output_gets_a_presigned_url_that_loads_without_credentials_for_its_max_age(s3_storage, settings):
    default_storage.save("projects/k/images/run/panel_001.png", ContentFile(b"\x89PNG-bytes"))
    assert s3_storage.keys("media/") == ["media/projects/k/images/run/panel_001.png"]

    url = blob_signed_url(name="projects/k/images/run/panel_001.png")
    assert url.startswith(f"{s3_storage.endpoint_url}/comicmem-test/media/projects/k/images/run/panel_001.png?")
    assert "X-Amz-Expires=3600" in url
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.read() == b"\x89PNG-bytes"

    # The store enforces the expiry it was signed with (moto does not check it; S3 and MinIO do).
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"storage": settings.MEMORY.storage.model_copy(update={"signed_url_max_age": 60})}
    )
    assert "X-Amz-Expires=60" in blob_signed_url(name="projects/k/images/run/panel_001.png")


def test_the_integrity_check_reads_the_bucket_keeps_what_is_sound_and_repairs_the_rest(images, settings):
    cache_set(namespace="images", key="sound", value=b"s" * 50)
    cache_set(namespace="images", key="lost", value=b"l" * 60)
    lost = CacheEntry.objects.get(size_bytes=60)
    images.client().delete_object(Bucket="comicmem-test", Key=f"cache/ai_images/{lost.blob_name[:2]}/{lost.blob_name}")
    images.client().put_object(Bucket="comicmem-test", Key="cache/ai_images/cd/cd-orphan", Body=b"o")
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"cache_options": settings.MEMORY.cache_options.model_copy(update={"orphan_grace_seconds": 0})}
    )

    report = integrity_check(repair=True)

    cache_problems = sorted(
        (problem.kind, problem.repaired) for problem in report.problems if problem.kind.startswith("cache_")
    )
    assert cache_problems == [("cache_blob_without_entry", True), ("cache_entry_without_blob", True)]
    assert report.checked["cache_entries"] == 2
    sound = CacheEntry.objects.get()
    assert sound.size_bytes == 50
    assert images.keys("cache/") == [f"cache/ai_images/{sound.blob_name[:2]}/{sound.blob_name}"]
    assert cache_get(namespace="images", key="sound") == b"s" * 50


def test_a_large_value_streams_in_and_out_of_the_store_and_hits_again_on_a_helper_thread(images):
    value = os.urandom(3 * 1024 * 1024 + 17)
    assert cache_set_stream(namespace="images", key="page", source=io.BytesIO(value), content_type="image/png")

    handle = cache_open(namespace="images", key="page")
    assert handle is not None
    with handle:
        assert handle.read() == value
    # Whole reads: the first inline, the next beside the row's lookup (the speculative read), all verified.
    assert [cache_get(namespace="images", key="page") == value for _ in range(3)] == [True, True, True]
    cache_statistics_flush()
    statistics = cache_counters_read(namespace="images")
    assert (statistics["hits"], statistics["misses"], statistics["corrupted"]) == (4, 0, 0)
