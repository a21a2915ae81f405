from __future__ import annotations

from collections.abc import Iterator

import pytest

from comicmem_site.celery import app
from tests.workflows.pipelines import effects_table_create


@pytest.fixture
def eager() -> Iterator[None]:
    """Tasks run inline when their message is sent (after commit): the service-level way to drive the engine."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def effects_table(db) -> None:
    effects_table_create()


@pytest.fixture
def run_inline(eager, effects_table, django_capture_on_commit_callbacks):
    """Call ``fn`` and run every after-commit callback (and so every task) it leads to, recursively."""

    def call(fn, /, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(**kwargs)

    return call
