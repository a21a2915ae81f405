"""A streamed generate-with-context whose client goes away after the first piece, on a real web server (gunicorn
under WSGI, uvicorn under ASGI) and a real OpenAI-compatible server that answers slowly: the reply is still read
to its end and stored once, and a retry with the same X-Request-ID gets all of it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from rest_framework.authtoken.models import Token

from memory_app.models import ContextMessage
from memory_app.services.conversation import context_create
from tests.conftest import REPO_ROOT, subprocess_env
from tests.factories import UserFactory
from tests.faults.servers import Gunicorn, free_port, request

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GENERATE = "/api/context/generate-with-context"
REPLY = "The blue castle stands on the hill above the sleeping town."
WORDS = len(REPLY.split())


class Uvicorn:
    """``uvicorn comicmem_site.asgi:application`` in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("ab")
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "comicmem_site.asgi:application", "--port", str(self.port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.output()
            try:
                request("GET", f"{self.base}/api/health/", timeout=5)
                return
            except OSError:
                assert time.monotonic() < deadline, self.output()
                time.sleep(0.2)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        self._log.close()


def first_delta_then_disconnect(url: str, body: dict, token: str, request_id: str) -> tuple[str, float]:
    headers = {"Authorization": f"Token {token}", "X-Request-ID": request_id}
    started = time.monotonic()
    with httpx.Client(timeout=30) as client, client.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "delta":
                return json.loads(line.removeprefix("data: "))["content"], time.monotonic() - started
    raise AssertionError("no delta")


def read_stream(url: str, body: dict, token: str, request_id: str) -> list[tuple[str, dict]]:
    headers = {"Authorization": f"Token {token}", "X-Request-ID": request_id}
    events, event = [], None
    with httpx.Client(timeout=30) as client, client.stream("POST", url, json=body, headers=headers) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
    return events


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_a_client_that_disconnects_mid_stream_loses_nothing(tmp_path, fake_openai, server):
    if server == "asgi":
        pytest.importorskip("uvicorn")
    fake_openai.reply(REPLY)
    fake_openai.pace(0.4)  # about 4.4 s for the whole answer
    user = UserFactory(username="reader")
    token = Token.objects.create(user=user).key
    context = context_create(owner=user)
    env = subprocess_env(
        LLM_PROVIDER="openai", LLM_BASE_URL=fake_openai.base_url, LLM_API_KEY="sk-test", LLM_MODEL="fake-model"
    )
    web = Gunicorn(env, tmp_path / "web.log", workers=1) if server == "wsgi" else Uvicorn(env, tmp_path / "web.log")
    body = {"context_id": str(context.id), "prompt": "Where is the castle?", "stream": True}
    try:
        web.wait_ready()
        first, elapsed = first_delta_then_disconnect(web.base + GENERATE, body, token, "req-gone")
        # The first piece came as soon as the provider sent it, not at the end of the answer.
        assert first == "The"
        assert elapsed < 0.4 * WORDS - 1

        deadline = time.monotonic() + 30
        while not ContextMessage.objects.filter(context=context, role="assistant").exists():
            assert time.monotonic() < deadline, web.output()
            time.sleep(0.2)
        stored = ContextMessage.objects.get(context=context, role="assistant")
        assert stored.content == REPLY
        assert stored.metadata["usage"]["completion_tokens"] == WORDS
        assert not ContextMessage.objects.get(context=context, role="user").unanswered

        retried = read_stream(web.base + GENERATE, body, token, "req-gone")
    finally:
        web.stop()

    assert retried[0] == ("delta", {"content": REPLY})
    assert retried[-1][0] == "done"
    assert retried[-1][1]["replayed"] is True
    assert retried[-1][1]["message"]["position"] == stored.position
    assert len(fake_openai.requests) == 1
    assert ContextMessage.objects.filter(context=context).count() == 2
