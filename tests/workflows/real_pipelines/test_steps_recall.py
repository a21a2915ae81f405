"""``preferences.recall``: the project's earlier stories and characters recalled into script generation,
character design and character extraction, and kept in ``data.recall``."""

from __future__ import annotations

import json

import pytest

from memory_app.models import SearchKind, WorkflowState
from memory_app.services.characters import character_create
from memory_app.services.search import search_entries_write, search_entry_build
from memory_app.services.workflow import workflow_create
from tests.workflows.real_pipelines.test_api import post
from workflows.engine import StepContext
from workflows.pipelines import comic_generation as comic
from workflows.pipelines import text_compression as compression
from workflows.pipelines.recall import recall_query

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media")]

CHAPTER_ONE = "第一章。勇敢的小明来到杭州的西湖边。他遇见了善良的小红。小红说：“明天见。”"
CHAPTER_TWO = "第二章。小明又来到西湖边。小红在等他。"
UNRELATED = "第三章。老张在山里砍柴，天黑才回家。"


def story_run(project, user, text: str) -> WorkflowState:
    """A run of the project whose story text is in the index (as a run's creation writes it)."""
    run = workflow_create(
        workflow_type="comic_generation", project=project, owner=user, steps=["a"], data={"text": text}, preferences={}
    )
    search_entries_write(
        [
            search_entry_build(
                kind=SearchKind.STORY,
                object_id=run.pk,
                owner_id=user.pk,
                project_id=project.pk,
                text=text,
                created_at=run.created_at,
            )
        ]
    )
    return run


def character_on_record(project, user, name: str, description: str):
    character = character_create(user=user, project=project, name=name, appearance_features={"hair_color": "黑色"})
    search_entries_write(
        [
            search_entry_build(
                kind=SearchKind.CHARACTER,
                object_id=character.pk,
                owner_id=user.pk,
                project_id=project.pk,
                text=f"{name} {description}",
                created_at=character.created_at,
            )
        ]
    )
    return character


def step_context(run: WorkflowState, data: dict, preferences: dict) -> StepContext:
    return StepContext(
        workflow_id=str(run.pk),
        workflow_type=run.workflow_type,
        project_id=run.project_id,
        step="s",
        data=data,
        preferences=preferences,
        attempt=1,
        project=run.project,
        owner=run.owner,
    )


def chapter_two_data() -> dict:
    return {
        "text": CHAPTER_TWO,
        "style": "manga_shonen",
        "segments": [{"index": 0, "text": "小明又来到西湖边。"}, {"index": 1, "text": "小红在等他。"}],
        "main_characters": ["小明", "小红"],
        "character_aliases": {},
    }


@pytest.fixture
def chapters(project, user):
    first = story_run(project, user, CHAPTER_ONE)
    story_run(project, user, UNRELATED)
    xiaoming = character_on_record(project, user, "小明", "黑色头发，红色运动服")
    second = story_run(project, user, CHAPTER_TWO)  # the run itself: its own story is indexed too
    return first, xiaoming, second


def test_script_generation_recalls_earlier_stories_and_characters_into_continuity_notes(chapters):
    first, xiaoming, second = chapters

    result = comic.script_generation(step_context(second, chapter_two_data(), {"recall": True}))

    recall = result["recall"]
    assert recall["query"] == "小明 小红 西湖"
    assert recall["mode"] == "lexical" and recall["degraded"] is None
    found = {(hit["kind"], hit["id"]) for hit in recall["hits"]}
    assert ("stories", str(first.pk)) in found
    assert ("characters", str(xiaoming.pk)) in found
    assert ("stories", str(second.pk)) not in found  # never the run's own story
    assert all(hit["text"] in CHAPTER_ONE or hit["kind"] == "characters" for hit in recall["hits"])
    assert "<mark>" in next(hit["snippet"] for hit in recall["hits"] if hit["kind"] == "stories")
    assert "西湖" in recall["places"]
    # Each panel's script keeps the recalled lines that name its characters or places.
    first_panel, second_panel = result["scripts"]
    assert CHAPTER_ONE in first_panel["continuity"]
    assert "小明: 小明 黑色头发，红色运动服" in first_panel["continuity"]
    assert CHAPTER_ONE in second_panel["continuity"]
    assert all("小明" not in note or "小红" in note for note in second_panel["continuity"])


def test_without_recall_nothing_is_recalled(chapters):
    _first, _xiaoming, second = chapters

    result = comic.script_generation(step_context(second, chapter_two_data(), {}))

    assert "recall" not in result
    assert all("continuity" not in script for script in result["scripts"])


def test_character_design_takes_what_earlier_chapters_say_of_a_character(chapters):
    *_, second = chapters
    data = {**chapter_two_data(), "segments": [{"index": 0, "text": "小红走进教室。"}], "main_characters": ["小红"]}

    without = comic.character_design(step_context(second, data, {}))
    with_recall = comic.character_design(step_context(second, data, {"recall": True}))

    assert without["characters"][0]["personality_traits"] == []
    assert "recall" not in without
    design = with_recall["characters"][0]
    # "善良的小红" is in chapter one only.
    assert design["personality_traits"] == ["善良"]
    assert {"kind": "stories", "id": str(chapters[0].pk)} in design["recalled"]
    assert with_recall["recall"]["query"] == "小红 西湖"


def test_character_design_reuses_the_recall_of_script_generation(chapters):
    *_, second = chapters
    scripted = comic.script_generation(step_context(second, chapter_two_data(), {"recall": True}))
    recorded = {**scripted["recall"], "hits": scripted["recall"]["hits"][:1]}

    designed = comic.character_design(step_context(second, {**scripted, "recall": recorded}, {"recall": True}))

    assert designed["recall"] == recorded


def test_the_script_prompt_of_a_chat_model_holds_the_recalled_lines(chapters, openai_llm):
    *_, second = chapters
    script = {"scene": "湖边", "characters": ["小明"], "dialogue": [], "caption": ""}
    openai_llm.reply(json.dumps(script))
    openai_llm.reply(json.dumps(script))

    comic.script_generation(step_context(second, chapter_two_data(), {"recall": True}))

    system = openai_llm.requests[0].body["messages"][0]["content"]
    assert "Earlier in this series (recalled, for continuity; do not retell it):" in system
    assert f"- {CHAPTER_ONE}" in system


def test_text_compression_recalls_and_keeps_an_earlier_character_the_text_names(chapters, project, user):
    first, _xiaoming, run = chapters
    character_on_record(project, user, "阿福", "是小明的黄色小狗")  # found by 小明, named by the text
    text = "阿福跟着小明跑到西湖边。小明笑了。"

    result = compression.character_extraction(step_context(run, {"text": text}, {"recall": True}))

    assert "阿福" in result["main_characters"], result["recall"]
    assert ("stories", str(first.pk)) in {(hit["kind"], hit["id"]) for hit in result["recall"]["hits"]}
    without = compression.character_extraction(step_context(run, {"text": text}, {}))
    assert "recall" not in without


def test_the_query_falls_back_to_the_texts_beginning():
    assert recall_query("今天天气很好。", forms={}) == "今天天气很好。"


@pytest.mark.parametrize("workflow_type", ["comic_generation", "text_compression"])
@pytest.mark.parametrize("value", ["yes", 1, None, {"top_k": 2}])
def test_a_bad_recall_preference_is_400_and_starts_nothing(auth_client, project, workflow_type, value):
    response = post(auth_client, workflow_type, {"text": CHAPTER_TWO}, {"recall": value})

    assert response.status_code == 400
    assert response.json()["error"]["details"]["fields"] == {"preferences.recall": ["recall is true or false."]}
    assert not WorkflowState.objects.exists()
