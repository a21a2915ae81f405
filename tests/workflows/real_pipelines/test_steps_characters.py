"""The comic steps and the characters a person edited: aliases, locks, reference images, style examples."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from memory_app.services.character_references import character_reference_add
from memory_app.services.characters import character_create, character_update
from memory_app.services.creative import style_create
from memory_app.services.workflow import workflow_create
from tests.workflows.real_pipelines.test_steps import context
from workflows.engine import StepContext
from workflows.pipelines import comic_generation as comic

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media")]


def png(color: str) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(output, format="PNG")
    return output.getvalue()


def test_character_design_draws_an_alias_as_its_character_and_keeps_what_a_person_set(project, user):
    character = character_create(
        user=user, project=project, name="王伯", aliases=["老王"], appearance_features={"hair_color": "黑色"}
    )
    reference, _ = character_reference_add(user=user, character=character, data=png("#00AA55"))
    data = {
        "segments": [{"index": 0, "text": "慈祥的老王和王伯。"}],
        "main_characters": ["老王", "王伯"],
        "scripts": [
            {"index": 0, "scene": "村口", "characters": ["老王"], "dialogue": [{"speaker": "老王", "text": "走"}]}
        ],
    }

    result = comic.character_design(context(data))

    assert [design["name"] for design in result["characters"]] == ["王伯"]
    design = result["characters"][0]
    assert design["appearance_features"]["hair_color"] == "黑色"  # the person's, not the offline design's 灰白色
    assert design["appearance_features"]["age_group"] == "elder"  # new: added
    assert design["references"] == [
        {
            "storage_name": reference.storage_name,
            "sha256": reference.sha256,
            "content_type": "image/png",
            "dominant_colors": ["#00AA55"],
        }
    ]
    assert design["mentions"] == 2
    assert result["scripts"][0]["characters"] == ["王伯"]
    assert result["scripts"][0]["dialogue"] == [{"speaker": "王伯", "text": "走"}]


def test_scene_composition_uses_the_style_s_examples_and_the_characters_references(project, user):
    style_create(
        user=user, template_id="ink_wash", name="水墨", prompt="ink wash", reference_examples=["远山淡墨", "留白构图"]
    )
    run = workflow_create(
        workflow_type="comic_generation", project=project, owner=user, steps=["a"], data={}, preferences={}
    )
    reference = {
        "storage_name": "references/x.png",
        "sha256": "ab" * 32,
        "content_type": "image/png",
        "dominant_colors": ["#00AA55", "#112233", "#445566"],
    }
    design = {
        "name": "小明",
        "appearance_features": {},
        "consistent_features": [],
        "colors": {},
        "references": [reference],
    }
    data = {
        "style": "ink_wash",
        "characters": [design],
        "scripts": [{"index": 0, "scene": "村口", "characters": ["小明"], "dialogue": [], "caption": ""}],
    }
    step = StepContext(
        workflow_id=str(run.pk),
        workflow_type="comic_generation",
        project_id=project.pk,
        step="scene_composition",
        data=data,
        preferences={"seed": 1},
        attempt=1,
        project=project,
        owner=user,
    )

    panel = comic.scene_composition(step)["panels"][0]

    assert "in the manner of the style's examples: 远山淡墨; 留白构图" in panel["prompt"]
    assert panel["figures"] == [{"name": "小明", "colors": {}, "reference_colors": ["#00AA55", "#112233"]}]
    assert panel["character_references"] == [{**reference, "character": "小明"}]


def test_after_a_merge_a_run_that_finds_the_merged_name_draws_the_surviving_character(project, user):
    from memory_app.services.characters import character_merge
    from memory_app.services.creative import character_upsert

    kept = character_create(user=user, project=project, name="林小雨", colors={"hair": "#111111"})
    merged, _ = character_upsert(
        project=project,
        name="小雨",
        appearance_features={},
        consistent_features=[],
        personality_traits=[],
        colors={},
    )
    character_merge(user=user, character=merged, into=kept)
    data = {
        "segments": [{"index": 0, "text": "小雨笑了。"}],
        "main_characters": ["小雨"],
        "scripts": [{"index": 0, "scene": "院子", "characters": ["小雨"], "dialogue": []}],
    }

    result = comic.character_design(context(data))

    assert [(design["name"], design["colors"]["hair"]) for design in result["characters"]] == [("林小雨", "#111111")]
    assert result["scripts"][0]["characters"] == ["林小雨"]


def test_a_run_paused_after_design_draws_what_the_owner_then_set_on_the_record(project, user):
    """pause_after: ["character_design"], the owner fixes the character, continue: the panels show the fix."""
    character = character_create(user=user, project=project, name="林小雨", appearance_features={"age_group": "elder"})
    run = workflow_create(
        workflow_type="comic_generation", project=project, owner=user, steps=["a"], data={}, preferences={}
    )
    designed = {
        "name": "林小雨",
        "appearance_features": {"age_group": "elder", "hair_color": "灰白色"},
        "consistent_features": ["hair_color"],
        "personality_traits": [],
        "colors": {"hair": "#BBBBBB", "skin": "#FFDBAC"},
        "references": [],
    }
    character_update(
        user=user,
        character=character,
        fields={"appearance_features": {"age_group": "child"}, "colors": {"hair": "#111111"}},
    )
    reference, _ = character_reference_add(user=user, character=character, data=png("#00AA55"))
    step = StepContext(
        workflow_id=str(run.pk),
        workflow_type="comic_generation",
        project_id=project.pk,
        step="scene_composition",
        data={
            "style": "manga_shonen",
            "characters": [designed],
            "scripts": [{"index": 0, "scene": "校门", "characters": ["林小雨"], "dialogue": [], "caption": ""}],
        },
        preferences={"seed": 1},
        attempt=1,
        project=project,
        owner=user,
    )

    result = comic.scene_composition(step)

    (drawn,) = result["characters"]
    # What the person set wins; what they never touched (hair_color, skin) stays as the run designed it.
    assert drawn["appearance_features"] == {"age_group": "child", "hair_color": "灰白色"}
    assert drawn["colors"] == {"hair": "#111111", "skin": "#FFDBAC"}
    assert [item["sha256"] for item in drawn["references"]] == [reference.sha256]
    assert result["panels"][0]["figures"][0]["colors"]["hair"] == "#111111"
