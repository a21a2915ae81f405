"""Creative memory services: a character never drifts once designed; ratings are bounded."""

from __future__ import annotations

import pytest

from memory_app.errors import ValidationFailed
from memory_app.models import StyleUsage
from memory_app.services.creative import character_upsert, style_rate

pytestmark = pytest.mark.django_db


def test_an_existing_character_keeps_its_features_and_colours(project):
    first, created = character_upsert(
        project=project,
        name="小明",
        appearance_features={"hair_color": "黑色", "clothing_style": "红色运动服"},
        consistent_features=["hair_color"],
        personality_traits=["勇敢"],
        colors={"hair": "#222222"},
        mentions=3,
    )
    assert created is True

    again, created = character_upsert(
        project=project,
        name="小明",
        appearance_features={"hair_color": "金色", "height": "150cm"},
        consistent_features=["clothing_style"],
        personality_traits=["好奇", "勇敢"],
        colors={"hair": "#FFD700", "skin": "#F1C27D"},
        mentions=2,
    )

    assert created is False
    assert again.pk == first.pk
    assert again.appearance_features == {"hair_color": "黑色", "clothing_style": "红色运动服", "height": "150cm"}
    assert again.colors == {"hair": "#222222", "skin": "#F1C27D"}
    assert again.consistent_features == ["clothing_style", "hair_color"]
    assert again.personality_traits == ["勇敢", "好奇"]
    assert again.mentions == 5


def test_a_score_out_of_range_is_refused_and_nothing_is_written(project, user, manga_shonen):
    with pytest.raises(ValidationFailed):
        style_rate(style=manga_shonen, project=project, user=user, score=5.5)

    assert StyleUsage.objects.count() == 0
