"""Wake-ups are published by the process's sending thread: the caller does not wait for Redis, every key
reaches the channel, and a Redis that refuses costs a log line, never the caller or the thread."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from memory_app.services import events
from memory_app.services.events import EVENTS_CHANNEL, event_wake, event_wakes_flush


def test_wake_ups_are_published_off_the_callers_thread_each_key_once(settings, redis_url, monkeypatch):
    settings.REDIS_URL = redis_url
    listener = redis.Redis.from_url(redis_url).pubsub()
    listener.subscribe(EVENTS_CHANNEL)
    listener.get_message(timeout=1)  # the subscription's confirmation
    under_way, answer = threading.Event(), threading.Event()
    publishers: list[str] = []
    publish = redis.Redis.publish

    def slow(self, channel, message):
        publishers.append(threading.current_thread().name)
        under_way.set()
        answer.wait(5)  # Redis answering slowly: the callers below must not wait for it
        return publish(self, channel, message)

    monkeypatch.setattr(redis.Redis, "publish", slow)
    monkeypatch.setattr(redis.client.Pipeline, "publish", lambda self, *args: self.execute_command("PUBLISH", *args))

    started = time.monotonic()
    event_wake(project_key="p-1")
    assert under_way.wait(5)
    for key in ("p-2", "p-2", "p-3"):  # queued while p-1's publish waits for its answer
        event_wake(project_key=key)
    assert time.monotonic() - started < 1  # the four calls waited for nothing
    answer.set()
    assert event_wakes_flush(5)

    received = []
    while (message := listener.get_message(timeout=1)) is not None:
        received.append(message["data"].decode())
    listener.close()
    assert publishers == ["comicmem-event-wake"]
    # The first alone; the ones queued meanwhile together, p-2 once.
    assert received == ["p-1", "p-2", "p-3"]


def test_a_refused_publish_is_logged_and_the_next_one_still_sent(settings, redis_url, monkeypatch, caplog):
    settings.REDIS_URL = redis_url
    calls: list[str] = []
    publish = redis.Redis.publish

    def refuse_once(self, channel, message):
        calls.append(message)
        if len(calls) == 1:
            raise redis.ConnectionError("Redis is restarting")
        return publish(self, channel, message)

    monkeypatch.setattr(redis.Redis, "publish", refuse_once)

    event_wake(project_key="p-lost")
    assert event_wakes_flush(5)
    event_wake(project_key="p-next")
    assert event_wakes_flush(5)

    assert calls == ["p-lost", "p-next"]
    assert "event wake-up for projects p-lost not published" in caplog.text


def test_without_redis_nothing_is_queued(settings):
    settings.REDIS_URL = ""

    event_wake(project_key="p-1")

    assert events._WAKE_SENDER._queued == {}
    assert event_wakes_flush(0.1)


@pytest.fixture(autouse=True)
def _drained():
    yield
    assert event_wakes_flush(5)
