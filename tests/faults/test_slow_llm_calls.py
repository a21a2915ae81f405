"""A slow LLM (10 s an answer) and one user firing more generate-with-context calls than the thread count of a
gunicorn worker: health and another user's requests still answer at once, the user's extra calls get 429 (on any
web process: the slots live in Redis) and another user's call beyond the process's bound gets 503."""

from __future__ import annotations

import threading
import time

import pytest
from rest_framework.authtoken.models import Token

from memory_app.services.conversation import context_create
from tests.conftest import subprocess_env
from tests.factories import UserFactory
from tests.faults.servers import Gunicorn, request

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LLM_SECONDS = 10.0
GENERATE = "/api/context/generate-with-context"


def timed(method: str, url: str, **kwargs) -> tuple[int, dict, float]:
    started = time.monotonic()
    status, body = request(method, url, **kwargs)
    return status, body, time.monotonic() - started


def test_one_user_s_slow_llm_calls_stall_nobody_else(tmp_path, redis_url, fake_openai):
    fake_openai.slow(LLM_SECONDS)
    alice, bob, carol = (UserFactory(username=name) for name in ("alice", "bob", "carol"))
    tokens = {user.username: Token.objects.create(user=user).key for user in (alice, bob, carol)}
    alice_context = context_create(owner=alice)
    env = subprocess_env(
        LLM_PROVIDER="openai",
        LLM_BASE_URL=fake_openai.base_url,
        LLM_API_KEY="sk-test",
        LLM_MODEL="fake-model",
        REDIS_URL=redis_url,  # the per-user slots, shared by both web processes
        GUNICORN_THREADS="4",  # so at most 2 LLM calls a process
    )
    first = Gunicorn(env, tmp_path / "first.log", workers=1)
    second = Gunicorn(env, tmp_path / "second.log", workers=1)
    try:
        first.wait_ready()
        second.wait_ready()
        results: list[tuple[int, dict, float]] = []

        def alice_generates(number: int) -> None:
            body = {"context_id": str(alice_context.id), "prompt": f"panel {number}"}
            results.append(timed("POST", first.base + GENERATE, body=body, token=tokens["alice"], timeout=60))

        # Six at once: more than the worker's four threads.
        callers = [threading.Thread(target=alice_generates, args=(number,)) for number in range(6)]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 20
        while len(fake_openai.requests) < 2:
            assert time.monotonic() < deadline, first.output()
            time.sleep(0.05)
        time.sleep(0.5)  # the other calls arrive (and, with the bounds, are refused at once)

        health = timed("GET", first.base + "/api/health/")
        bob_lists = timed("GET", first.base + "/api/context/", token=tokens["bob"])
        carol_generates = timed("POST", first.base + GENERATE, body={"prompt": "hi"}, token=tokens["carol"])
        alice_elsewhere = timed(
            "POST", second.base + GENERATE, body={"prompt": "one more"}, token=tokens["alice"], timeout=60
        )
        for caller in callers:
            caller.join(timeout=60)
    finally:
        first.stop()
        second.stop()

    print(f"\nwhile the LLM takes {LLM_SECONDS} s: health {health[2]:.3f} s, another user's list {bob_lists[2]:.3f} s")
    assert (health[0], bob_lists[0]) == (200, 200)
    assert health[2] < 2 and bob_lists[2] < 2  # not the LLM's 10 s
    refused = [result for result in results if result[0] != 200]
    assert sorted(status for status, _, _ in results) == [200, 200, 429, 429, 429, 429]
    assert {body["error"]["code"] for _, body, _ in refused} == {"THROTTLED"}
    assert all(elapsed < 2 for _, _, elapsed in refused)  # refused at once, not after a wait for a thread
    assert (carol_generates[0], carol_generates[1]["error"]["code"]) == (503, "LLM_CAPACITY_EXHAUSTED")
    assert (alice_elsewhere[0], alice_elsewhere[1]["error"]["code"]) == (429, "THROTTLED")
    assert carol_generates[2] < 2 and alice_elsewhere[2] < 2
    # Only Alice's two calls reached the LLM; the refused ones wrote nothing.
    assert len(fake_openai.requests) == 2
    assert alice_context.messages.count() == 4
