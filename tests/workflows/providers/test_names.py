"""Offline character extraction: full names, aliases, idioms, who is present; scored on a labelled corpus."""

from __future__ import annotations

import pytest

from tests.workflows.providers.names_corpus import CORPUS, Passage
from workflows.providers import name_forms, names


def test_the_surnames_and_the_stop_list_are_data_files():
    assert {"林", "周", "欧阳", "司马", "诸葛", "上官"} <= name_forms.SURNAMES
    assert {"欧阳", "司马", "诸葛"} <= name_forms.COMPOUND_SURNAMES
    assert "林" not in name_forms.COMPOUND_SURNAMES
    assert {"东张西望", "老师", "大家"} <= name_forms.NOT_NAMES
    assert name_forms.read_words("surnames.txt") == name_forms.SURNAMES
    assert name_forms.split_full_name("欧阳明轩") == ("欧阳", "明轩")
    assert name_forms.split_full_name("周伯") is None
    assert name_forms.address_kind("周伯") == ("周", "elder man")
    assert name_forms.given_name_forms("孙悦") == {"悦悦", "阿悦", "小悦"}


def test_a_full_name_the_tagger_splits_is_one_character_with_its_given_name_as_alias():
    story = "林小雨推开门，东张西望。小雨喊了一声妈妈。林小雨放下书包，小雨笑了。"

    found = names.extract_names(story)

    assert [(item["name"], item["aliases"], item["mentions"]) for item in found] == [("林小雨", ["小雨"], 4)]


def test_a_full_name_said_once_then_its_given_name_is_one_character():
    # Each full name once, then the given name alone: 林 + 小雨 and 陈 + 大山 (大山 tagged a place) are still names.
    story = "林小雨在夜市遇见了老朋友陈大山。小雨笑着说：好久不见！大山说：我们去吃臭豆腐吧。"

    found = names.extract_names(story)

    assert [(item["name"], item["aliases"], item["mentions"]) for item in found] == [
        ("林小雨", ["小雨"], 2),
        ("陈大山", ["大山"], 2),
    ]
    # 连 (tagged a person) before 老师, said again, is still no name: 连老师 is a word and a title, not a full name.
    assert names.extract_names("连老师都笑了。老师很开心。") == []


def test_idioms_and_common_words_are_never_characters():
    story = "大家东张西望，老师金碧辉煌地走进来。大家东张西望。老师说了几句。张西望着天。"

    assert names.extract_names(story) == []
    assert not name_forms.plausible_name("东张西望")
    assert not name_forms.plausible_name("老师")
    assert name_forms.plausible_name("欧阳明轩")


def test_forms_of_address_of_one_kind_fold_and_of_two_kinds_stay_apart():
    tied = names.extract_names("老周坐在门口。周伯抽着烟。老周笑了。周伯点点头。")
    apart = names.extract_names("杨婶晒被子，杨叔修车。杨婶喊他，杨叔没应。")

    assert [(item["name"], item["aliases"]) for item in tied] == [("老周", ["周伯"])]
    assert sorted(item["name"] for item in apart) == ["杨叔", "杨婶"]


def test_an_explicit_link_folds_a_nickname_into_the_name():
    found = names.extract_names("铁匠张大山力气大，人称张铁手。张大山打铁。张铁手的名声传遍了小镇。")

    assert [(item["name"], item["aliases"]) for item in found] == [("张大山", ["张铁手"])]


def test_people_only_talked_about_are_listed_as_not_present():
    story = "“李老师今天又请假了，”王小虎说，“听说李老师病了。”赵晴晴点点头。王小虎叹了口气。赵晴晴笑了。"

    found = {item["name"]: item["present"] for item in names.extract_names(story)}

    assert found == {"李老师": False, "王小虎": True, "赵晴晴": True}


def test_present_in_a_passage_counts_aliases_and_leaves_out_reported_people():
    forms = {"林小雨": ["林小雨", "小雨"], "王伯": ["王伯"], "李老师": ["李老师"]}

    assert names.present_in("小雨跑过来对王伯说：“李老师找你。”", forms) == ["林小雨", "王伯"]
    assert names.present_in("“小雨，快来！”妈妈喊道。", forms) == ["林小雨"]
    assert names.present_in("王伯想起了李老师。", forms) == ["王伯"]


def _score(passages: list[Passage]) -> dict[str, float]:
    """Precision and recall over characters (a found name matches an expected one when it is its name or one of
    its aliases) and over alias pairs (two names put in one character)."""
    found_count = expected_count = matched = 0
    pairs_found = pairs_expected = pairs_matched = 0
    for passage in passages:
        found = [item for item in names.extract_names(passage["text"]) if item["present"]]
        expected = passage["characters"]
        found_count += len(found)
        expected_count += len(expected)
        for character in expected:
            forms = {character["name"], *character["aliases"]}
            matched += any(item["name"] in forms for item in found)
        found_pairs = {frozenset((item["name"], alias)) for item in found for alias in item["aliases"]}
        expected_pairs = {frozenset((c["name"], alias)) for c in expected for alias in c["aliases"]}
        pairs_found += len(found_pairs)
        pairs_expected += len(expected_pairs)
        pairs_matched += len(found_pairs & expected_pairs)
    return {
        "name_precision": matched / found_count,
        "name_recall": matched / expected_count,
        "alias_precision": pairs_matched / pairs_found,
        "alias_recall": pairs_matched / pairs_expected,
    }


def test_precision_and_recall_on_the_labelled_corpus(capsys):
    scores = _score(CORPUS)

    with capsys.disabled():
        print(
            f"\ncharacter extraction on {len(CORPUS)} passages: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
        )
    assert len(CORPUS) >= 10
    assert all(score >= 0.9 for score in scores.values()), scores


@pytest.mark.parametrize("passage", CORPUS, ids=lambda passage: passage["text"][:6])
def test_every_found_name_and_alias_occurs_in_its_passage(passage):
    for item in names.extract_names(passage["text"]):
        assert all(form in passage["text"] for form in [item["name"], *item["aliases"]])
