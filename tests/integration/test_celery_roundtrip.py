"""A real worker process, a real broker: the filesystem transport of the embedded mode, and Redis."""

from __future__ import annotations

import uuid

import pytest
from celery.result import AsyncResult

from comicmem_site.celery import app
from memory_app.tasks import ping

pytestmark = pytest.mark.integration


def test_round_trip_on_the_filesystem_broker(start_worker):
    start_worker()
    token = uuid.uuid4().hex

    answer = ping.delay(token).get(timeout=60, interval=0.1)

    assert answer["token"] == token
    from django.db import connection

    assert answer["database"] == connection.vendor


def test_round_trip_on_redis(start_worker, redis_url):
    with app.connection_for_write(redis_url) as connection:
        # Anything left in the test queue by an earlier run would be consumed first.
        connection.default_channel.queue_purge("celery")
    start_worker(broker_url=redis_url)
    token = uuid.uuid4().hex

    with app.connection_for_write(redis_url) as connection:
        sent = ping.apply_async(args=[token], connection=connection)
    answer = AsyncResult(sent.id, app=app).get(timeout=60, interval=0.1)

    assert answer["token"] == token
