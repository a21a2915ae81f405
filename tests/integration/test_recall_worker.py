"""Recall across chapters on a real worker: a second chapter's comic run with ``preferences.recall`` records the
first chapter's story and character in ``data.recall``; without it, nothing is recalled."""

from __future__ import annotations

import pytest

from memory_app.models import Character, SearchKind, WorkflowState
from memory_app.services.search import search_entries_write, search_entry_build
from tests.integration.test_pipelines_worker import start
from tests.integration.test_workflow_worker import FAST, status_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAPTER_ONE = "小明走到西湖边\uff0c老王正在钓鱼。老王笑着说\uff1a“小明\uff0c来帮我拿鱼竿。”小明高兴地跑了过去。"
CHAPTER_TWO = "第二天\uff0c小明又来到西湖边。老王不在\uff0c小明一个人看着湖水。"
PREFERENCES = {"segment_length": 60, "panels_per_page": 2}


@pytest.fixture
def worker_env(start_worker, media, settings) -> dict[str, str]:
    return {**FAST, "COMICMEM_TEST_MEDIA_ROOT": str(media), "CACHE_DIR": str(settings.CACHE_DIR)}


def finished(run: WorkflowState) -> WorkflowState:
    wait_for(lambda: status_of(run) in {"completed", "failed"}, what="the run to end")
    run.refresh_from_db()
    assert run.status == "completed", run.error
    return run


def index_chapter(run: WorkflowState) -> None:
    """The index rows of the run's story and of the project's characters (the write paths add them once indexing
    lands there; replacing a row is harmless)."""
    rows = [
        search_entry_build(
            kind=SearchKind.STORY,
            object_id=run.pk,
            owner_id=run.owner_id,
            project_id=run.project_id,
            text=run.data["text"],
            created_at=run.created_at,
        )
    ]
    rows += [
        search_entry_build(
            kind=SearchKind.CHARACTER,
            object_id=character.pk,
            owner_id=run.owner_id,
            project_id=run.project_id,
            text=" ".join([character.name, *character.appearance_features.values()]),
            created_at=character.created_at,
        )
        for character in Character.objects.filter(project_id=run.project_id)
    ]
    search_entries_write(rows)


def test_a_second_chapter_recalls_the_first_on_a_worker(start_worker, worker_env, user, project, manga_shonen):
    start_worker(**worker_env)
    first = finished(start(user, "comic_generation", {"text": CHAPTER_ONE, "style": "manga_shonen"}, PREFERENCES))
    index_chapter(first)
    xiaoming = Character.objects.get(project=project, name="小明")

    second = finished(
        start(
            user,
            "comic_generation",
            {"text": CHAPTER_TWO, "style": "manga_shonen"},
            {**PREFERENCES, "recall": True},
        )
    )
    plain = finished(start(user, "comic_generation", {"text": CHAPTER_TWO, "style": "manga_shonen"}, PREFERENCES))

    recall = second.data["recall"]
    found = {(hit["kind"], hit["id"]) for hit in recall["hits"]}
    assert ("stories", str(first.pk)) in found
    assert ("characters", str(xiaoming.pk)) in found
    assert all(hit["id"] != str(second.pk) for hit in recall["hits"])
    assert "小明" in recall["query"].split()
    assert (recall["mode"], recall["degraded"]) == ("lexical", None)
    assert any(CHAPTER_ONE[:10] in note for script in second.data["scripts"] for note in script["continuity"])
    design = next(design for design in second.data["characters"] if design["name"] == "小明")
    assert {"kind": "stories", "id": str(first.pk)} in design["recalled"]

    assert "recall" not in plain.data
    assert all("continuity" not in script for script in plain.data["scripts"])
