"""Vectors computed by a real worker after the index rows commit, from a real (local, fake) embeddings server;
a redelivered task embeds nothing again; the search is then hybrid."""

from __future__ import annotations

import pytest
from django.db import transaction

from memory_app.models import SearchVector
from memory_app.search_text import text_hash
from memory_app.selectors.search import memory_search
from memory_app.tasks import search_embed_task
from tests.integration.test_workflow_worker import wait_for
from tests.support.search_entries import index_history_texts

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXTS = ["小明在河边练剑", "小红送来一封信", "小明在河边练剑", "月光照着山谷", "龙门客栈起了大火", "师父留下的宝剑"]


def test_a_worker_embeds_new_entries_after_commit_once_each(start_worker, embeddings_configured, user, project):
    worker = start_worker(
        EMBEDDINGS_BASE_URL=embeddings_configured.base_url,
        EMBEDDINGS_API_KEY="sk-embed-secret",
        EMBEDDINGS_MODEL="fake-embed",
    )

    with transaction.atomic():
        entries = index_history_texts(project=project, texts=TEXTS)
    distinct = {text_hash(text) for text in TEXTS}
    wait_for(
        lambda: set(SearchVector.objects.filter(model="fake-embed").values_list("text_hash", flat=True)) == distinct,
        timeout=60,
        what="the worker to store every text's vector",
    )

    assert sorted(embeddings_configured.embedded) == sorted(set(TEXTS))  # the repeated text once

    # The same task again (a redelivery): it finds every text stored and asks the endpoint nothing.
    search_embed_task.delay([entry.pk for entry in entries])
    wait_for(
        lambda: worker.output().count("memory_app.search_embed[") >= 4,  # received + succeeded, twice
        timeout=60,
        what="the second task to end",
    )
    assert "succeeded" in worker.output().rsplit("memory_app.search_embed[", 1)[1]
    assert len(embeddings_configured.embedded) == len(set(TEXTS))
    assert SearchVector.objects.count() == len(distinct)

    results = memory_search("宝剑", user=user, limit=3)
    assert results.mode == "hybrid"
    assert results.hits[0].entry.text == "师父留下的宝剑"
