"""Concurrent appends to one context from several threads, each with its own database connection."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from memory_app.models import ContextMessage, SearchEntry
from memory_app.services.conversation import NewMessage, context_append, context_create, context_generate
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 4
APPENDS = 15


def run_in_threads(target, count: int) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def worker(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_concurrent_appends_keep_a_strict_order_without_loss_or_duplicates():
    context = context_create(owner=UserFactory(username="alice"), max_messages=20, max_tokens=100_000)

    def append_many(index: int) -> None:
        for number in range(APPENDS):
            context_append(context=context, messages=NewMessage(role="user", content=f"t{index}-{number}"))

    assert run_in_threads(append_many, THREADS) == []

    messages = list(ContextMessage.objects.filter(context=context).order_by("position"))
    assert [m.position for m in messages] == list(range(THREADS * APPENDS))
    assert sorted(m.content for m in messages) == sorted(f"t{i}-{n}" for i in range(THREADS) for n in range(APPENDS))
    for index in range(THREADS):  # each thread's messages are in the order it sent them
        mine = [m.content for m in messages if m.content.startswith(f"t{index}-")]
        assert mine == [f"t{index}-{n}" for n in range(APPENDS)]
    assert [m.archived for m in messages] == [True] * (THREADS * APPENDS - 20) + [False] * 20
    context.refresh_from_db()
    assert (context.window_count, context.window_tokens, context.next_position) == (
        20,
        sum(m.token_count for m in messages[-20:]),
        THREADS * APPENDS,
    )


def test_concurrent_retries_with_one_request_id_store_the_prompt_and_the_reply_once():
    context = context_create(owner=UserFactory(username="alice"))
    context_append(context=context, messages=NewMessage(role="user", content="The cat is orange."))
    results: list[tuple[int, str]] = []

    def generate(index: int) -> None:
        generation = context_generate(context=context, prompt="What colour is the cat?", request_id="req-same")
        results.append((generation.reply.pk, generation.reply.content))

    assert run_in_threads(generate, 3) == []

    prompts = ContextMessage.objects.filter(context=context, request_id="req-same")
    assert [(m.role, m.content, m.unanswered) for m in prompts] == [("user", "What colour is the cat?", False)]
    (reply,) = ContextMessage.objects.filter(context=context, request_id="req-same:reply")
    assert results == [(reply.pk, "From earlier in this conversation:\n- You said: The cat is orange.")] * 3
    assert ContextMessage.objects.filter(context=context).count() == 3


def test_concurrent_appends_by_context_id_keep_a_strict_order_without_loss_or_duplicates():
    # The API's way (owner and id, outside any transaction): on PostgreSQL a read, then a write that happens only
    # if the context is still as read, or else under the lock.
    owner = UserFactory(username="alice")
    context = context_create(owner=owner, max_messages=20, max_tokens=100_000)

    def append_many(index: int) -> None:
        for number in range(APPENDS):
            context_append(
                user=owner, context_id=context.id, messages=NewMessage(role="user", content=f"t{index}-{number}")
            )

    assert run_in_threads(append_many, THREADS) == []

    messages = list(ContextMessage.objects.filter(context=context).order_by("position"))
    assert [m.position for m in messages] == list(range(THREADS * APPENDS))
    assert sorted(m.content for m in messages) == sorted(f"t{i}-{n}" for i in range(THREADS) for n in range(APPENDS))
    for index in range(THREADS):
        mine = [m.content for m in messages if m.content.startswith(f"t{index}-")]
        assert mine == [f"t{index}-{n}" for n in range(APPENDS)]
    assert [m.archived for m in messages] == [True] * (THREADS * APPENDS - 20) + [False] * 20
    context.refresh_from_db()
    assert (context.window_count, context.window_tokens, context.next_position) == (
        20,
        sum(m.token_count for m in messages[-20:]),
        THREADS * APPENDS,
    )
    assert SearchEntry.objects.filter(message__context=context).count() == THREADS * APPENDS
