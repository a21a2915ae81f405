"""PostgreSQL out of reach of the web process (a TCP relay in front of it is cut; the server itself is never
stopped): the API answers 503 in the envelope, /api/health/ names the database, and once the relay is back
nothing is half-written: every batch of appends is stored whole or not at all, every acknowledged one whole."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from memory_app.models import ContextMessage, ConversationContext, WorkflowState
from memory_app.services.conversation import context_create
from tests.conftest import REQUIRE_SERVICES, database_url_for_subprocess, subprocess_env
from tests.faults.servers import Gunicorn, TcpRelay, request

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SENDERS = 3
BATCH = 3
PER_SENDER = 2000  # a bound: the senders stop when the test says so, long before


@pytest.fixture
def relay() -> Iterator[TcpRelay]:
    if connection.vendor != "postgresql":
        # `make test` runs the suite on SQLite (COMICMEM_SQLITE_PASS) and then on PostgreSQL, which runs this.
        if REQUIRE_SERVICES and os.environ.get("COMICMEM_SQLITE_PASS") != "1":
            pytest.fail("required in CI: the database fault test needs PostgreSQL (set TEST_DATABASE_URL)")
        pytest.skip("needs PostgreSQL: set TEST_DATABASE_URL=postgres://… (this run uses SQLite)")
    settings_dict = connection.settings_dict
    relay = TcpRelay(settings_dict.get("HOST") or "127.0.0.1", int(settings_dict.get("PORT") or 5432))
    relay.start()
    yield relay
    relay.close()


def through(relay: TcpRelay) -> str:
    """The test database's URL with the relay in place of the server."""
    settings_dict = connection.settings_dict
    host, port = settings_dict.get("HOST") or "127.0.0.1", settings_dict.get("PORT") or 5432
    url = database_url_for_subprocess()
    assert f"@{host}:{port}/" in url, url
    return url.replace(f"@{host}:{port}/", f"@127.0.0.1:{relay.port}/")


def assert_unavailable(status: int, body: object) -> None:
    assert status == 503, body
    assert isinstance(body, dict) and body["success"] is False, body
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE", body
    assert set(body["metadata"]) >= {"timestamp", "request_id"}


def test_database_down_gives_503_and_leaves_nothing_half_written(relay, user, project, tmp_path):
    context = context_create(owner=user, max_messages=1000, max_tokens=1_000_000)
    token = Token.objects.create(user=user).key
    web = Gunicorn(subprocess_env(DATABASE_URL=through(relay), CONN_MAX_AGE="60"), tmp_path / "web.log", workers=2)
    try:
        web.wait_ready()
        url = f"{web.base}/api/context/{context.id}/messages"
        outcomes: list[tuple[str, int]] = []  # (batch, status)
        unexpected: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        def send(sender: int) -> None:
            for number in range(PER_SENDER):
                if stop.is_set():
                    return
                batch = f"s{sender}-{number}"
                messages = [{"role": "user", "content": f"{batch}/{part}"} for part in range(BATCH)]
                try:
                    status, body = request("POST", url, body={"messages": messages}, token=token)
                    if status != 201:
                        assert_unavailable(status, body)
                except (OSError, AssertionError) as error:
                    with lock:
                        unexpected.append(repr(error))
                    return
                with lock:
                    outcomes.append((batch, status))
                if status == 503:
                    time.sleep(0.05)  # the database is out of reach: no need to hammer the web process

        def acknowledged() -> int:
            with lock:
                return sum(1 for _, status in outcomes if status == 201)

        def failures() -> int:
            with lock:
                return sum(1 for _, status in outcomes if status == 503)

        threads = [threading.Thread(target=send, args=(sender,)) for sender in range(SENDERS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while acknowledged() < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert acknowledged() >= 15, web.output()[-5000:]
        relay.cut()  # in the middle of the burst
        deadline = time.monotonic() + 120
        while failures() < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert failures() >= 10, (unexpected, web.output()[-5000:])

        status, body = request("GET", f"{web.base}/api/health/")
        assert_unavailable(status, body)
        assert "database" in body["error"]["details"]["unavailable"], body
        assert body["error"]["details"]["components"]["database"]["ok"] is False
        status, body = request(
            "POST",
            f"{web.base}/api/workflows/",
            body={"workflow_type": "text_compression", "project_id": project.id, "data": {"text": "x"}},
            token=token,
        )
        assert_unavailable(status, body)

        relay.restore()
        stop_at = time.monotonic() + 120
        while time.monotonic() < stop_at:
            with lock:
                recovered = any(status == 201 for _, status in outcomes[-SENDERS:])
            if recovered:
                break
            time.sleep(0.1)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        status, body = request("GET", f"{web.base}/api/health/")
        assert status == 200, body
        assert body["data"]["components"]["database"]["ok"] is True
    finally:
        web.stop()

    assert unexpected == [], web.output()[-5000:]
    assert not WorkflowState.objects.exists()  # the refused start wrote nothing
    assert failures() >= 10
    assert acknowledged() >= 15
    stored = list(ContextMessage.objects.filter(context=context).order_by("position").values_list("content", flat=True))
    assert len(stored) == len(set(stored))
    per_batch = Counter(content.split("/")[0] for content in stored)
    assert set(per_batch.values()) == {BATCH}, per_batch  # whole batches only
    for batch, status in outcomes:
        if status == 201:
            assert per_batch[batch] == BATCH, batch
    # A batch is stored in order, and the context's counters agree with its rows.
    for batch in per_batch:
        assert [content for content in stored if content.startswith(f"{batch}/")] == [
            f"{batch}/{part}" for part in range(BATCH)
        ]
    context = ConversationContext.objects.get(pk=context.pk)
    assert context.next_position == len(stored)
    assert list(
        ContextMessage.objects.filter(context=context).values_list("position", flat=True).order_by("position")
    ) == list(range(len(stored)))
