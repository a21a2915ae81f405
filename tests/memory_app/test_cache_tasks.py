from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone

from memory_app import tasks
from memory_app.models import CacheEntry
from memory_app.services.cache import cache_set
from tests.memory_app.test_schedules import maintenance_migration

pytestmark = pytest.mark.django_db


def test_cleanup_task_takes_one_batch_and_requeues_while_more_is_left(
    cache_namespaces, settings, monkeypatch, django_capture_on_commit_callbacks
):
    cache_namespaces(images={"backend": "file", "ttl": 60})
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"cache_options": settings.MEMORY.cache_options.model_copy(update={"cleanup_batch_size": 2})}
    )
    for index in range(3):
        cache_set(namespace="images", key=index, value=b"x")
    CacheEntry.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    requeued = []
    monkeypatch.setattr(tasks.cache_cleanup_task, "delay", lambda: requeued.append(True))

    with django_capture_on_commit_callbacks(execute=True):
        first = tasks.cache_cleanup_task()
    assert (first["expired_entries"], first["more"], requeued) == (2, True, [True])
    with django_capture_on_commit_callbacks(execute=True):
        second = tasks.cache_cleanup_task()
    assert (second["expired_entries"], second["more"], requeued) == (1, False, [True])
    assert CacheEntry.objects.count() == 0


def test_cleanup_task_in_a_transaction_that_rolls_back_requeues_nothing(cache_namespaces, settings, monkeypatch):
    cache_namespaces(images={"backend": "file", "ttl": 60})
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"cache_options": settings.MEMORY.cache_options.model_copy(update={"cleanup_batch_size": 1})}
    )
    for index in range(2):
        cache_set(namespace="images", key=index, value=b"x")
    CacheEntry.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    requeued = []
    monkeypatch.setattr(tasks.cache_cleanup_task, "delay", lambda: requeued.append(True))

    with pytest.raises(RuntimeError), transaction.atomic():
        assert tasks.cache_cleanup_task()["more"] is True
        raise RuntimeError("rolled back")

    assert requeued == []
    assert CacheEntry.objects.count() == 2


def test_cleanup_is_scheduled():
    # A beat row made by the maintenance data migration, at the shortest namespace cleanup_interval.
    module = maintenance_migration()
    schedules = {name: (task, seconds) for name, task, seconds, _ in module._schedules()}

    assert schedules["cache-cleanup"] == ("memory_app.cache_cleanup", 300)
