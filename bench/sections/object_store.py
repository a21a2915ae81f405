"""Target 4, across hosts: an ``images`` cache hit on a store several hosts share (an S3 server, moto's on
loopback), the entry written by one host's configuration and read by another's, against a raw boto3 GET of the
same object from the same store.

Both sides pay the same network round trip to the store; the hit adds its row lookup in the database, the size
and sha256 check and the hit bookkeeping.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.core import BENCH_DIR, Result, Sizes, median, result, timed, timed_pair

BUCKET = "comicmem-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_S3_REGION_NAME": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def _host(name: str, storages: dict[str, Any]) -> Iterator[None]:
    """This process configured as one host: its own local CACHE_DIR, the shared bucket's storages."""
    from django.test.utils import override_settings

    from memory_app.services.cache import cache_process_state_reset

    cache_process_state_reset()  # no guess of another "host" survives into this one
    with override_settings(CACHE_DIR=BENCH_DIR / "hosts" / name / "cache", STORAGES=storages):
        yield
    cache_process_state_reset()


def run(*, sizes: Sizes) -> list[Result]:
    import boto3
    import environ
    from django.conf import settings

    from comicmem_site.settings.object_storage import blob_storages
    from memory_app.models import CacheEntry
    from memory_app.services import cache as cache_service

    size = 512 << 10  # a panel-sized PNG
    blob = os.urandom(size)
    key = {"prompt": "bench across hosts", "size": size}
    results = []
    with _s3_server() as endpoint:
        variables = {
            "STORAGE_BACKEND": "s3",
            "AWS_STORAGE_BUCKET_NAME": BUCKET,
            "AWS_S3_ENDPOINT_URL": endpoint,
            "AWS_S3_ADDRESSING_STYLE": "path",
            **CREDENTIALS,
        }
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            storages = {
                **settings.STORAGES,
                **blob_storages(environ.Env(), signed_url_max_age=settings.MEMORY.storage.signed_url_max_age),
            }
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=CREDENTIALS["AWS_S3_REGION_NAME"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=BUCKET)

        with _host("writer", storages):
            cache_service.cache_delete(namespace="images", key=key)
            cache_service.cache_set(namespace="images", key=key, value=blob, content_type="image/png")
            entry = CacheEntry.objects.get(namespace="images", key=cache_service.cache_key(namespace="images", key=key))
        object_key = (
            f"cache/{settings.MEMORY.cache['images'].directory or 'images'}/{entry.blob_name[:2]}/{entry.blob_name}"
        )

        with _host("reader", storages):
            assert cache_service.cache_get(namespace="images", key=key) == blob, "the reader host missed"

            def hit() -> None:
                cache_service.cache_get(namespace="images", key=key)

            def raw_get() -> None:
                client.get_object(Bucket=BUCKET, Key=object_key)["Body"].read()

            for function in (hit, raw_get):
                timed(function, 3)
            repeats = max(5, sizes.cache_repeats // 10)
            hit_samples, raw_samples = timed_pair(hit, raw_get, repeats)
            cache_service.cache_delete(namespace="images", key=key)
    hit_time, raw_time = median(hit_samples), median(raw_samples)
    results.append(
        result(
            target="4",
            name=f"images hit across hosts (S3), {size >> 10} KiB",
            measured=hit_time * 1000,
            baseline=raw_time * 1000,
            unit="ms",
            baseline_name="raw boto3 GET of the same object",
            limit=1.5,
            comparison="<=",
        )
    )
    return results
