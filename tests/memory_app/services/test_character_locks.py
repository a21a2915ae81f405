"""What a person set is locked: automatic design (``character_upsert``, a run's commit) only adds what is new."""

from __future__ import annotations

import pytest

from memory_app.models import CharacterVersion
from memory_app.services.characters import character_create, character_design_merge, character_update
from memory_app.services.creative import character_upsert

pytestmark = pytest.mark.django_db


def design(**fields):
    return {
        "project": fields.pop("project"),
        "name": fields.pop("name", "林小雨"),
        "appearance_features": fields.pop("appearance_features", {}),
        "consistent_features": fields.pop("consistent_features", []),
        "personality_traits": fields.pop("personality_traits", []),
        "colors": fields.pop("colors", {}),
        **fields,
    }


def test_a_run_adds_new_keys_but_never_touches_what_a_person_set(project, user):
    character = character_create(
        user=user,
        project=project,
        name="林小雨",
        appearance_features={"hair": "黑色长发", "clothing": "蓝色校服"},
        personality_traits=["安静"],
    )
    character = character_update(user=user, character=character, fields={"appearance_features": {"hair": "黑色长发"}})

    stored, created = character_upsert(
        **design(
            project=project,
            appearance_features={"hair": "金色卷发", "clothing": "红色运动服", "eyes": "大眼睛"},
            personality_traits=["活泼"],
            colors={"hair": "#FFD700"},
            mentions=4,
        ),
        workflow_id="00000000-0000-0000-0000-000000000001",
    )

    assert created is False
    # hair: set by the person; clothing: removed by the person (locked, not added back); eyes: new.
    assert stored.appearance_features == {"hair": "黑色长发", "eyes": "大眼睛"}
    assert stored.personality_traits == ["安静"]  # a list a person set is theirs
    assert stored.colors == {"hair": "#FFD700"}
    assert stored.mentions == 4
    latest = CharacterVersion.objects.filter(character=stored).order_by("-version").first()
    assert (latest.version, latest.action, latest.source, str(latest.workflow_id)) == (
        3,
        "designed",
        "run",
        "00000000-0000-0000-0000-000000000001",
    )
    assert set(latest.changes) == {"appearance_features", "colors"}


def test_a_run_that_adds_nothing_records_no_version(project, user):
    character_create(user=user, project=project, name="林小雨", appearance_features={"hair": "黑色长发"})

    character_upsert(**design(project=project, appearance_features={"hair": "金色"}))

    assert CharacterVersion.objects.count() == 1


def test_a_run_finds_a_character_by_its_alias(project, user):
    character = character_create(user=user, project=project, name="林小雨", aliases=["小雨"])

    stored, created = character_upsert(**design(project=project, name="小雨", colors={"skin": "#F1C27D"}))

    assert (stored.pk, created) == (character.pk, False)
    assert stored.colors == {"skin": "#F1C27D"}


def test_the_merge_rule_is_pure_and_keeps_existing_values():
    record = {
        "appearance_features": {"hair": "black"},
        "colors": {},
        "consistent_features": ["hair"],
        "personality_traits": ["calm"],
        "locked_fields": ["colors.hair"],
    }

    merged = character_design_merge(
        record,
        {
            "appearance_features": {"hair": "red", "eyes": "green"},
            "colors": {"hair": "#FF0000", "skin": "#EEEEEE"},
            "consistent_features": ["eyes"],
            "personality_traits": ["calm", "brave"],
        },
    )

    assert merged == {
        "appearance_features": {"hair": "black", "eyes": "green"},
        "colors": {"skin": "#EEEEEE"},
        "consistent_features": ["eyes", "hair"],
        "personality_traits": ["calm", "brave"],
    }


def test_a_run_adds_the_story_s_aliases_unless_held_elsewhere_or_set_by_a_person(project, user):
    character_create(user=user, project=project, name="周伯")  # another character holds 周伯
    stored, created = character_upsert(**design(project=project, name="老周", aliases=["周伯", "周师傅", "老周"]))
    assert created
    assert stored.aliases == ["周师傅"]  # never its own name, never a name another character of the project has

    chosen = character_create(user=user, project=project, name="林小雨", aliases=["雨雨"])
    stored, _ = character_upsert(**design(project=project, name="林小雨", aliases=["小雨"]))
    assert stored.pk == chosen.pk
    assert stored.aliases == ["雨雨"]  # a person set them: a run adds none
    assert "aliases" in stored.locked_fields
