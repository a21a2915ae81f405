"""gunicorn SIGKILLed (master and workers) during a burst of appends: every message that was acknowledged with a
2xx is stored afterwards, once, in the order its sender sent it; a new web process carries on from there."""

from __future__ import annotations

import threading
import time

import pytest
from rest_framework.authtoken.models import Token

from memory_app.models import ContextMessage
from memory_app.services.conversation import context_create
from tests.conftest import subprocess_env
from tests.faults.servers import Gunicorn, request, wait_for_other_database_sessions_to_end

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SENDERS = 4
PER_SENDER = 200  # a bound: the kill comes long before
ACKNOWLEDGED_BEFORE_KILL = 40


def test_every_acknowledged_append_survives_a_killed_web_process(user, tmp_path):
    context = context_create(owner=user, max_messages=10, max_tokens=100_000)
    token = Token.objects.create(user=user).key
    env = subprocess_env()
    web = Gunicorn(env, tmp_path / "gunicorn.log", workers=2)
    web.wait_ready()
    url = f"{web.base}/api/context/{context.id}/messages"

    acknowledged: dict[int, list[str]] = {sender: [] for sender in range(SENDERS)}
    unexpected: list[tuple[int, object]] = []
    lock = threading.Lock()

    def send(sender: int) -> None:
        for number in range(PER_SENDER):
            content = f"s{sender}-{number}"
            try:
                status, body = request("POST", url, body={"role": "user", "content": content}, token=token)
            except OSError:
                return  # the web process is gone: this message may or may not be stored, nobody was told
            with lock:
                if 200 <= status < 300:
                    acknowledged[sender].append(content)
                else:
                    unexpected.append((status, body))
                    return

    def total() -> int:
        with lock:
            return sum(len(contents) for contents in acknowledged.values())

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(SENDERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while total() < ACKNOWLEDGED_BEFORE_KILL and time.monotonic() < deadline and not unexpected:
        time.sleep(0.01)
    web.kill()
    for thread in threads:
        thread.join(timeout=60)
    # A COMMIT the killed process had sent may still be run by its server session: read once it has ended.
    wait_for_other_database_sessions_to_end()

    assert unexpected == []
    assert total() >= ACKNOWLEDGED_BEFORE_KILL, web.output()
    stored = list(ContextMessage.objects.filter(context=context).order_by("position").values_list("content", flat=True))
    sent = {f"s{sender}-{number}" for sender in range(SENDERS) for number in range(PER_SENDER)}
    assert len(stored) == len(set(stored))  # none twice
    assert set(stored) <= sent
    for sender, contents in acknowledged.items():
        # Each sender waits for its answer before sending the next: its acknowledged messages are stored, in order.
        mine = [content for content in stored if content.startswith(f"s{sender}-")]
        assert mine[: len(contents)] == contents
        assert len(mine) <= len(contents) + 1  # at most the one in flight when the process died
    assert list(
        ContextMessage.objects.filter(context=context).order_by("position").values_list("position", flat=True)
    ) == list(range(len(stored)))

    # A new web process appends after the last stored message.
    again = Gunicorn(env, tmp_path / "gunicorn-again.log", workers=1)
    try:
        again.wait_ready()
        status, body = request(
            "POST", url.replace(web.base, again.base), body={"role": "user", "content": "after"}, token=token
        )
    finally:
        again.stop()
    assert status == 201, body
    assert [message["position"] for message in body["data"]["messages"]] == [len(stored)]
