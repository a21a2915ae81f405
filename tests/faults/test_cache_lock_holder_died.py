"""The compute-once lock of ``cached()`` dies with its holder: a worker process killed while it draws a panel
no longer holds the panel's key (and the pool slot of whoever waits for it) for ``lock_timeout`` (300 s)."""

from __future__ import annotations

import base64
import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import redis
from django.core.cache import cache as shared_cache
from PIL import Image

from memory_app.services.cache import cache_get_or_compute
from tests.conftest import REPO_ROOT, subprocess_env
from tests.integration.test_workflow_worker import FAST, status_of, wait_for
from tests.workflows.real_pipelines.conftest import STORY
from workflows import engine

pytestmark = pytest.mark.integration

KEY = "panel 3 of run 41"


class Caller:
    """``tests/support/cache_compute.py`` in a process of its own; its output lines, in order, as they come."""

    def __init__(self, env: dict[str, str], value: str, seconds: float, *extra: str) -> None:
        command = [sys.executable, "-m", "tests.support.cache_compute", "images", KEY, value, str(seconds), *extra]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))

    def expect(self, line: str, timeout: float = 60) -> None:
        """Wait for ``line``; fails with everything the process printed when it does not come in time."""
        while line not in self.lines:
            try:
                self.lines.append(self._queue.get(timeout=timeout))
            except queue.Empty:
                pytest.fail(f"no {line!r} within {timeout} s; the process printed {self.lines}")

    def signal(self, number: int) -> None:
        os.kill(self.process.pid, number)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def callers():
    started: list[Caller] = []

    def start(env: dict[str, str], value: str, seconds: float, *extra: str) -> Caller:
        started.append(Caller(env, value, seconds, *extra))
        return started[-1]

    yield start
    for caller in started:
        caller.stop()


@pytest.fixture
def redis_mode(settings, redis_url, tmp_path):
    """This process and the callers it starts share one Redis (as in production) and one cache folder."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": "comicmem",
        }
    }
    settings.CACHE_DIR = tmp_path / "cache"
    shared_cache.clear()
    yield subprocess_env(REDIS_URL=redis_url, CACHE_DIR=str(settings.CACHE_DIR))
    shared_cache.clear()


def lock_keys(redis_url: str) -> list[bytes]:
    return redis.Redis.from_url(redis_url).keys("*cmcache:lock:images:*")


def never_called() -> bytes:
    raise AssertionError("computed again")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_holder_frees_the_key_within_the_lock_ttl(redis_mode, redis_url, callers, tmp_path):
    go = tmp_path / "go"
    holder = callers(redis_mode, "never stored", 600)
    waiter = callers(redis_mode, "panel", 0.2, "--go", str(go))
    holder.expect("computing")
    waiter.expect("ready")
    [lock] = lock_keys(redis_url)
    # Short-lived and renewed, not held for the 300 s of lock_timeout.
    assert 0 < redis.Redis.from_url(redis_url).pttl(lock) <= 10_000

    holder.signal(signal.SIGKILL)
    holder.process.wait(timeout=10)
    started = time.monotonic()
    go.touch()
    waiter.expect("result panel", timeout=60)
    waited = time.monotonic() - started

    assert waited < 15  # at most the lock's 10 s time to live after its last renewal, not 300 s
    assert waiter.lines == ["ready", "computing", "result panel"]
    assert waiter.process.wait(timeout=10) == 0
    # Computed once: the next caller gets the waiter's value without computing.
    assert cache_get_or_compute(namespace="images", key=KEY, compute=never_called) == b"panel"
    assert lock_keys(redis_url) == []


@pytest.mark.django_db(transaction=True)
def test_a_holder_whose_lock_expired_leaves_the_next_holders_lock_alone(redis_mode, redis_url, callers, tmp_path):
    go, finish, holder_finish = tmp_path / "go", tmp_path / "finish", tmp_path / "holder-finish"
    holder = callers(redis_mode, "late", 0, "--lock-ttl", "1", "--until", str(holder_finish))
    waiter = callers(redis_mode, "panel", 0, "--lock-ttl", "1", "--go", str(go), "--until", str(finish))
    holder.expect("computing")
    waiter.expect("ready")
    client = redis.Redis.from_url(redis_url)
    [lock] = lock_keys(redis_url)
    holder_token = client.get(lock)

    # Stopped (a long pause, a frozen VM): its renewal stops too, and its lock expires within the 1 s.
    holder.signal(signal.SIGSTOP)
    go.touch()
    waiter.expect("computing", timeout=30)
    waiter_token = client.get(lock)
    assert waiter_token not in {None, holder_token}

    # The holder wakes up, finishes and releases: neither its renewal nor its release touches the waiter's lock.
    holder_finish.touch()
    holder.signal(signal.SIGCONT)
    holder.expect("result late")
    assert holder.process.wait(timeout=10) == 0
    assert client.get(lock) == waiter_token
    assert client.pttl(lock) > 0

    finish.touch()
    waiter.expect("result panel")
    assert waiter.process.wait(timeout=10) == 0
    assert lock_keys(redis_url) == []
    # The last computation's value is the one kept.
    assert cache_get_or_compute(namespace="images", key=KEY, compute=never_called) == b"panel"


@pytest.mark.django_db(transaction=True)
def test_embedded_mode_a_killed_holder_blocks_no_other_process(settings, callers, tmp_path):
    # No Redis: the compute-once lock is a threading.Lock of the holder's process, gone with the process.
    settings.CACHE_DIR = tmp_path / "cache"
    holder = callers(subprocess_env(REDIS_URL="", CACHE_DIR=str(settings.CACHE_DIR)), "never stored", 600)
    holder.expect("computing")
    holder.signal(signal.SIGKILL)
    holder.process.wait(timeout=10)
    calls = []

    def compute() -> bytes:
        calls.append(1)
        return b"panel"

    started = time.monotonic()
    assert cache_get_or_compute(namespace="images", key=KEY, compute=compute) == b"panel"
    assert time.monotonic() - started < 5  # not the 300 s of lock_timeout
    assert cache_get_or_compute(namespace="images", key=KEY, compute=never_called) == b"panel"
    assert calls == [1]


def png(width: int, height: int) -> str:
    output = io.BytesIO()
    Image.new("RGB", (width, height), "green").save(output, format="PNG")
    return base64.b64encode(output.getvalue()).decode()


@pytest.mark.slow
def test_a_pool_process_killed_while_drawing_a_panel_stalls_the_run_seconds_not_minutes(
    redis_mode, redis_url, start_worker, media, fake_openai, user, project, manga_shonen
):
    # The image API holds every request until the test lets it go: two panels are drawn at once, each under the
    # compute-once lock of its key in Redis.
    answer = threading.Event()

    def images(body: dict) -> tuple[int, dict]:
        answer.wait(120)
        width, height = (int(side) for side in body["size"].split("x"))
        return 200, {"data": [{"b64_json": png(width, height)}]}

    fake_openai.route("/v1/images/generations", images)
    worker = start_worker(
        concurrency=2,
        **{**redis_mode, **FAST},
        CELERY_RESULT_BACKEND="django-db",
        COMICMEM_TEST_MEDIA_ROOT=str(media),
        IMAGE_PROVIDER="openai",
        IMAGE_BASE_URL=fake_openai.base_url,
        IMAGE_MODEL="seedream",
    )
    run = engine.workflow_start(
        user=user,
        workflow_type="comic_generation",
        project_id="proj-001",
        data={"text": STORY, "style": "manga_shonen"},
        preferences={"segment_length": 60, "panels_per_page": 2},
    )

    def image_requests() -> list:
        return [request for request in fake_openai.requests if request.path == "/v1/images/generations"]

    wait_for(lambda: len(image_requests()) == 2, timeout=120, what="two panels to be drawn at once")
    assert len(lock_keys(redis_url)) == 2

    # The pool process drawing one of them dies (SIGKILL, the OOM killer); the worker's main process lives on.
    pool = psutil.Process(worker.process.pid).children()
    assert len(pool) == 2
    pool[0].kill()
    killed = time.monotonic()
    answer.set()
    wait_for(lambda: status_of(run) in {"completed", "failed"}, timeout=120, what="the run to end after the kill")
    stalled = time.monotonic() - killed

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert len(run.data["rendered"]) == 3
    # The killed panel was asked for twice (the drawing that died, then its redelivery), the others once.
    assert len(image_requests()) == 4
    assert stalled < 60  # the lock's 10 s time to live, not its old 300 s
