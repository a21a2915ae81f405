"""Each step function alone, on small texts: pure data in, data out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from memory_app.models import Character
from workflows.engine import COMPRESSION_HISTORY_KEY, StepContext
from workflows.pipelines import comic_generation as comic
from workflows.pipelines import text_compression as compression
from workflows.providers.llm import offline_script

pytestmark = pytest.mark.django_db


def context(data, preferences=None, step="s", item=None) -> StepContext:
    return StepContext(
        workflow_id="00000000-0000-0000-0000-000000000001",
        workflow_type="t",
        project_id="proj-001",
        step=step,
        data=data,
        preferences=preferences or {},
        attempt=1,
        item=item,
    )


def test_text_analysis_counts(story):
    result = compression.text_analysis(context({"text": story}))

    analysis = result["analysis"]
    assert (analysis["char_count"], analysis["paragraph_count"], analysis["sentence_count"]) == (len(story), 3, 8)
    assert analysis["top_words"][:2] == ["小明", "老王"]
    assert analysis["language"] == "chinese"


def test_character_extraction_finds_the_named_characters(story):
    result = compression.character_extraction(context({"text": story}))

    assert result["main_characters"] == ["小明", "老王"]
    assert [(item["name"], item["aliases"], item["present"]) for item in result["characters"]] == [
        ("小明", [], True),
        ("老王", ["王伯"], True),
    ]


def test_compression_execution_reaches_the_ratio_and_reports_it(story):
    data = {"text": story, "main_characters": ["小明", "老王", "王伯"]}

    result = compression.compression_execution(context(data, {"target_ratio": 0.75}))

    entry = result[COMPRESSION_HISTORY_KEY][0]
    assert entry["step"] == "compression_execution"
    assert (entry["input_size"], entry["output_size"]) == (len(story), len(result["compressed_text"]))
    assert abs(entry["compression_ratio"] - 0.75) <= 0.1
    assert all(name in result["compressed_text"] for name in data["main_characters"])


def test_quality_assessment_fails_when_a_main_character_is_lost():
    data = {"text": "小明和老王。" * 4, "compressed_text": "小明。小明。", "main_characters": ["小明", "老王"]}

    result = compression.quality_assessment(context(data, {"target_ratio": 0.25, "ratio_tolerance": 0.1}))

    assert result["quality"] == {
        "compression_ratio": 0.25,
        "target_ratio": 0.25,
        "ratio_tolerance": 0.1,
        "ratio_ok": True,
        "preserved_characters": ["小明"],
        "missing_characters": ["老王"],
        "passed": False,
    }


def test_text_segmentation_respects_boundaries_and_reports_section_3_2(story):
    result = comic.text_segmentation(context({"text": story}, {"segment_length": 60}))

    texts = [segment["text"] for segment in result["segments"]]
    assert texts == [
        "小明背着书包走进村口，老王正坐在槐树下抽烟。王伯笑着说：“小明，你又来看你爷爷了？”小明点点头。",
        "老王站起来，拍了拍小明的肩膀：“走，带你去河边钓鱼。”小明高兴地跳了起来。",
        "傍晚，王伯在河边等他们。老王钓到一条大鱼，小明拍手大笑。王伯说：“今天的晚饭有着落了！”",
    ]
    details = result["segmentation"]
    assert (details["input_length"], details["segments_count"]) == (len(story), 3)
    assert details["average_segment_length"] == round(sum(map(len, texts)) / 3)
    assert details["preserved_characters"] == ["小明", "老王"]
    assert result["character_aliases"] == {"小明": [], "老王": ["王伯"]}


def test_script_generation_finds_speakers_and_dialogue():
    segment = "王伯笑着说：“小明，你又来看你爷爷了？”小明点点头。"
    data = {"segments": [{"index": 0, "text": segment}], "main_characters": ["小明", "王伯"]}

    script = comic.script_generation(context(data))["scripts"][0]

    assert script["characters"] == ["王伯", "小明"]
    assert script["dialogue"] == [{"speaker": "王伯", "text": "小明，你又来看你爷爷了？"}]
    # The quote and the clause introducing it are the balloon's: the caption is the narration around them.
    assert script["caption"] == "小明点点头。"


def test_a_caption_never_reads_as_what_someone_said():
    names = ["小雨", "王老师"]
    cases = {
        "小雨说：“老师，我迟到了。”王老师笑着点点头。": "王老师笑着点点头。",
        "夕阳下，张明问道：“明天去图书馆吗？”小雨答应了。": "夕阳下，小雨答应了。",
        "“快跑！”小雨喊道。": "小雨喊道。",
        "小雨和王老师走进教室。": "小雨和王老师走进教室。",
    }
    captions = {segment: offline_script(segment, names=names)["caption"] for segment in cases}
    assert captions == cases


def test_character_design_keeps_what_the_record_already_says(project):
    Character.objects.create(
        project=project,
        name="小明",
        appearance_features={"hair_color": "金色"},
        colors={"hair": "#FFD700"},
        consistent_features=["hair_color"],
    )
    data = {"segments": [{"index": 0, "text": "勇敢的小明和慈祥的老王。"}], "main_characters": ["小明", "老王"]}

    designs = {design["name"]: design for design in comic.character_design(context(data))["characters"]}

    assert designs["小明"]["appearance_features"]["hair_color"] == "金色"
    assert designs["小明"]["colors"]["hair"] == "#FFD700"
    assert designs["小明"]["personality_traits"] == ["勇敢", "慈祥"]
    assert designs["老王"]["appearance_features"]["hair_color"] == "灰白色"
    assert designs["老王"]["appearance_features"]["age_group"] == "elder"


def test_scene_composition_builds_prompts_from_style_characters_and_previous_panel(project, user):
    from memory_app.services.workflow import workflow_create

    run = workflow_create(
        workflow_type="comic_generation", project=project, owner=user, steps=["a"], data={}, preferences={}
    )
    design = {
        "name": "小明",
        "appearance_features": {"hair_color": "黑色", "clothing_style": "红色运动服", "height": "150cm"},
        "consistent_features": ["clothing_style", "hair_color"],
        "colors": {"hair": "#222222"},
    }
    scripts = [
        {"index": 0, "scene": "村口", "characters": ["小明"], "dialogue": [], "caption": ""},
        {
            "index": 1,
            "scene": "河边",
            "characters": ["小明"],
            "dialogue": [{"speaker": "小明", "text": "好！"}],
            "caption": "傍晚",
        },
    ]
    data = {"style": "manga_shonen", "characters": [design], "scripts": scripts, "previous_context": "上一话的结尾"}
    step = StepContext(
        workflow_id=str(run.pk),
        workflow_type="comic_generation",
        project_id="proj-001",
        step="scene_composition",
        data=data,
        preferences={"seed": 100},
        attempt=1,
        project=project,
        owner=user,
    )

    panels = comic.scene_composition(step)["panels"]

    assert [panel["seed"] for panel in panels] == [100, 101]
    # A base seed at the top of the range wraps: every panel's seed stays one the image APIs take.
    top = comic.scene_composition(replace(step, preferences={"seed": 2**31 - 1}))["panels"]
    assert [panel["seed"] for panel in top] == [2**31 - 1, 0]
    assert panels[0]["prompt"].startswith("shonen manga style")
    assert "小明 (clothing_style: 红色运动服, hair_color: 黑色)" in panels[0]["prompt"]
    assert panels[0]["prompt"].endswith("previously: 上一话的结尾")
    assert panels[1]["prompt"].endswith("continuing from the previous panel: 村口")
    assert "inconsistent character design" in panels[0]["negative_prompt"]
    assert panels[1]["figures"] == [{"name": "小明", "colors": {"hair": "#222222"}, "reference_colors": []}]
    assert panels[1]["dialogue"] == [["小明", "好！"]]
    assert panels[0]["palette"] == ["#FF6B6B", "#4ECDC4", "#45B7D1"]


def test_only_characters_present_become_main_characters_with_their_aliases():
    story = (
        "林小雨推开院门，东张西望。小雨喊了一声王伯。王伯从屋里走出来。林小雨想起了外公陈志远。"
        "听说陈志远年轻时是个渔夫。王伯摸了摸小雨的头。"
    )

    result = comic.text_segmentation(context({"text": story}, {"segment_length": 60}))

    assert result["main_characters"] == ["林小雨", "王伯"]
    assert result["character_aliases"] == {"林小雨": ["小雨"], "王伯": []}


def test_a_panel_has_the_characters_acting_in_it_by_name_or_alias():
    segments = [
        {"index": 0, "text": "王伯坐在门口。小雨跑过来说：“李老师找你。”"},
        {"index": 1, "text": "王伯想起了李老师。"},
    ]
    data = {
        "segments": segments,
        "main_characters": ["林小雨", "王伯", "李老师"],
        "character_aliases": {"林小雨": ["小雨"], "王伯": [], "李老师": []},
    }

    first, second = comic.script_generation(context(data))["scripts"]

    assert first["characters"] == ["王伯", "林小雨"]
    assert first["dialogue"] == [{"speaker": "林小雨", "text": "李老师找你。"}]
    assert second["characters"] == ["王伯"]  # 李老师 is only remembered: not drawn


def test_character_design_records_aliases_and_reads_age_from_them(project, user):
    data = {
        "segments": [{"index": 0, "text": "周建国是个老木匠，人称周伯。周伯很和蔼。周建国笑了。"}],
        "main_characters": ["周建国"],
        "character_aliases": {"周建国": ["周伯"]},
    }
    step = replace(context(data), project=project, owner=user)

    result = comic.character_design(step)
    comic.character_design_commit(step, result)

    (design,) = result["characters"]
    assert (design["aliases"], design["mentions"]) == (["周伯"], 4)
    assert design["appearance_features"]["age_group"] == "elder"
    assert design["personality_traits"] == ["和蔼"]
    assert Character.objects.get(project=project, name="周建国").aliases == ["周伯"]

    comic.character_design_commit(step, {**result, "characters": [{**design, "aliases": ["老周"]}]})

    assert Character.objects.get(project=project, name="周建国").aliases == ["周伯", "老周"]


def test_a_later_chapter_naming_a_character_by_an_alias_uses_its_record(project, user):
    Character.objects.create(
        project=project,
        name="林小雨",
        aliases=["小雨"],
        appearance_features={"hair_color": "红色"},
        colors={"hair": "#B22222"},
    )
    data = {
        "segments": [{"index": 0, "text": "雨停了。小雨撑着伞走出校门。小雨笑了。"}],
        "main_characters": ["小雨"],
        "character_aliases": {"小雨": []},
    }
    step = replace(context(data), project=project, owner=user)

    result = comic.character_design(step)
    comic.character_design_commit(step, result)

    (design,) = result["characters"]
    assert (design["name"], design["aliases"]) == ("林小雨", ["小雨"])  # drawn, and scripted, as its record
    assert design["appearance_features"]["hair_color"] == "红色"
    assert list(Character.objects.filter(project=project).values_list("name", "aliases")) == [("林小雨", ["小雨"])]
