"""Vectors of indexed texts: cached by (model, text hash), sent after commit, idempotent, backfilled by command."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from comicmem_site.celery import app
from memory_app.errors import RetryableProviderError
from memory_app.models import SearchEntry, SearchVector
from memory_app.search_text import text_hash
from memory_app.selectors.search_vectors import vector_backend
from memory_app.services.search_vectors import (
    SEARCH_EMBED_TASK,
    search_embed_backfill_batch,
    search_embed_entries,
    search_vectors_pgvector_enable,
)
from memory_app.tasks import search_embed_task
from tests.fakes.embeddings_server import local_embedding
from tests.support.search_entries import index_history_texts

pytestmark = pytest.mark.django_db

TEXTS = ["小明在河边练剑", "小红送来一封信", "小明在河边练剑", "月光照着山谷", "龙门客栈起了大火"]


@pytest.fixture
def eager() -> Iterator[None]:
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def stored(model: str = "fake-embed") -> dict[str, np.ndarray]:
    return {
        row.text_hash: np.frombuffer(bytes(row.vector), dtype="<f4") for row in SearchVector.objects.filter(model=model)
    }


def test_index_writes_send_the_embedding_task_after_commit_only(
    embeddings_configured, project, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[list[int]] = []
    monkeypatch.setattr(search_embed_task, "apply_async", lambda args: sent.append(list(args[0])))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        entries = index_history_texts(project=project, texts=TEXTS[:2])
        assert sent == []  # not before the rows are visible to a worker

    assert len(callbacks) == 1
    assert sent == [[entry.pk for entry in entries]]


def test_a_rolled_back_write_sends_nothing(
    embeddings_configured, project, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[object] = []
    monkeypatch.setattr(search_embed_task, "apply_async", lambda args: sent.append(args))

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        index_history_texts(project=project, texts=TEXTS[:2])
        raise RuntimeError("rolled back")

    assert (callbacks, sent) == ([], [])
    assert SearchEntry.objects.count() == 0


def test_a_broker_that_cannot_be_reached_loses_only_the_send(
    embeddings_configured, project, monkeypatch, django_capture_on_commit_callbacks
):
    def unreachable(args):
        raise OSError("connection refused")

    monkeypatch.setattr(search_embed_task, "apply_async", unreachable)

    with django_capture_on_commit_callbacks(execute=True):
        entries = index_history_texts(project=project, texts=TEXTS[:2])

    assert SearchEntry.objects.filter(pk__in=[entry.pk for entry in entries]).count() == 2
    assert search_embed_backfill_batch(batch_size=10).embedded == 2


def test_without_embeddings_nothing_is_sent(project, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(search_embed_task, "apply_async", lambda args: pytest.fail("sent"))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        index_history_texts(project=project, texts=TEXTS[:2])

    assert callbacks == []
    assert search_embed_entries(entry_ids=[1, 2]).as_dict() == {
        "embedded": 0,
        "skipped": "embeddings are not configured",
    }


def test_the_task_embeds_each_distinct_text_once_and_a_redelivery_embeds_nothing(
    embeddings_configured, project, eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        entries = index_history_texts(project=project, texts=TEXTS)

    # Five rows, four distinct texts (the first and third are the same): four texts sent, in one batch of four.
    assert embeddings_configured.embedded == [TEXTS[0], TEXTS[1], TEXTS[3], TEXTS[4]]
    vectors = stored()
    assert set(vectors) == {text_hash(text) for text in TEXTS}
    for text in TEXTS:
        assert np.allclose(vectors[text_hash(text)], local_embedding(text), atol=1e-6)
    assert SearchVector.objects.get(text_hash=text_hash(TEXTS[0])).dimensions == 64

    again = search_embed_task.apply(args=([entry.pk for entry in entries],)).get()

    assert again == {"embedded": 0}
    assert len(embeddings_configured.embedded) == 4


def test_the_same_text_written_again_later_is_not_embedded_again(
    embeddings_configured, project, eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        index_history_texts(project=project, texts=[TEXTS[0]])
    with django_capture_on_commit_callbacks(execute=True):
        index_history_texts(project=project, texts=[TEXTS[0], TEXTS[1]])

    assert embeddings_configured.embedded == [TEXTS[0], TEXTS[1]]
    assert SearchVector.objects.count() == 2


def test_another_model_key_embeds_again(embeddings_configured, settings, project):
    entries = index_history_texts(project=project, texts=TEXTS[:2])
    search_embed_entries(entry_ids=[entry.pk for entry in entries])
    embeddings = settings.MEMORY.search.embeddings.model_copy(update={"dimensions": 16})
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"search": settings.MEMORY.search.model_copy(update={"embeddings": embeddings})}
    )

    report = search_embed_entries(entry_ids=[entry.pk for entry in entries])

    assert report.embedded == 2
    assert {len(vector) for vector in stored("fake-embed@16").values()} == {16}
    assert len(stored("fake-embed")) == 2


def test_a_failing_endpoint_raises_retryable_and_stores_nothing(embeddings_configured, project):
    entries = index_history_texts(project=project, texts=TEXTS[:2])
    embeddings_configured.fail(503)

    with pytest.raises(RetryableProviderError):
        search_embed_entries(entry_ids=[entry.pk for entry in entries])

    assert SearchVector.objects.count() == 0
    assert search_embed_task.autoretry_for == (RetryableProviderError,)
    assert search_embed_task.name == SEARCH_EMBED_TASK


def test_backfill_batches_until_nothing_is_missing(embeddings_configured, project, user):
    index_history_texts(project=project, texts=TEXTS)
    first = search_embed_backfill_batch(batch_size=3)
    assert (first.embedded, first.remaining) == (3, 1)

    output = io.StringIO()
    call_command("search_embed_backfill", "--batch-size", "1", "--json", stdout=output)

    backend = vector_backend()
    assert json.loads(output.getvalue()) == {"embedded": 1, "batches": 1, "remaining": 0, "backend": backend}
    assert len(embeddings_configured.embedded) == 4  # each distinct text once, over both runs
    assert [len(body["input"]) for body in embeddings_configured.embedding_requests] == [3, 1]

    output = io.StringIO()
    call_command("search_embed_backfill", stdout=output)
    assert output.getvalue().strip() == f"Embedded 0 texts in 1 batches; 0 left; vector backend: {backend}."


def test_backfill_without_embeddings_says_so(project):
    index_history_texts(project=project, texts=TEXTS[:1])

    with pytest.raises(CommandError, match="not configured"):
        call_command("search_embed_backfill")

    assert SearchVector.objects.count() == 0


def test_backfill_with_a_failing_endpoint_stops_with_a_message(embeddings_configured, project):
    index_history_texts(project=project, texts=TEXTS[:2])
    embeddings_configured.fail(500)

    with pytest.raises(CommandError, match=r"HTTP 500.*run the command again"):
        call_command("search_embed_backfill")

    assert SearchVector.objects.count() == 0


def test_bad_batch_size_is_refused(embeddings_configured):
    with pytest.raises(CommandError, match="1 or more"):
        call_command("search_embed_backfill", "--batch-size", "-1")


def test_pgvector_is_not_enabled_where_it_cannot_be(db):
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            if cursor.fetchone() is not None:
                pytest.skip("this PostgreSQL server has pgvector: tests/memory_app/selectors covers it")
    assert search_vectors_pgvector_enable() is False
