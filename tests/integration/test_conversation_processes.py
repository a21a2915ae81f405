"""Appends to one context from several real processes (not threads): strict order, none lost or duplicated."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from memory_app.models import ContextMessage
from memory_app.services.conversation import context_create
from tests.conftest import REPO_ROOT, subprocess_env
from tests.factories import UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PROCESSES = 3
APPENDS = 40

# Each process signals that Django is up, then waits for "go", so that the appends really overlap.
SCRIPT = """
import sys, time, pathlib, django
django.setup()
from memory_app.models import ConversationContext
from memory_app.services.conversation import NewMessage, context_append
context = ConversationContext.objects.get(pk=sys.argv[1])
folder = pathlib.Path(sys.argv[4])
(folder / f"ready-{sys.argv[2]}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
for number in range(int(sys.argv[3])):
    context_append(context=context, messages=NewMessage(role="user", content=f"p{sys.argv[2]}-{number}"))
"""


def test_appends_from_several_processes_keep_a_strict_order(tmp_path):
    context = context_create(owner=UserFactory(username="alice"), max_messages=10, max_tokens=100_000)
    env = subprocess_env()

    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(context.id), str(index), str(APPENDS), str(tmp_path)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for index in range(PROCESSES)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < PROCESSES and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [process.communicate(timeout=120)[0].decode(errors="replace") for process in processes]

    assert [process.returncode for process in processes] == [0] * PROCESSES, outputs
    messages = list(ContextMessage.objects.filter(context=context).order_by("position"))
    assert [m.position for m in messages] == list(range(PROCESSES * APPENDS))
    assert sorted(m.content for m in messages) == sorted(
        f"p{index}-{number}" for index in range(PROCESSES) for number in range(APPENDS)
    )
    for index in range(PROCESSES):
        assert [m.content for m in messages if m.content.startswith(f"p{index}-")] == [
            f"p{index}-{number}" for number in range(APPENDS)
        ]
    assert [m.archived for m in messages] == [True] * (PROCESSES * APPENDS - 10) + [False] * 10
    context.refresh_from_db()
    assert (context.window_count, context.next_position) == (10, PROCESSES * APPENDS)
