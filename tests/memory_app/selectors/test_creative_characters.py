"""``character_list_named``: the characters a comic run reads, by its project's key and the names it found."""

from __future__ import annotations

import pytest

from memory_app.models import Character
from memory_app.selectors.creative import character_list_named
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def test_only_the_named_characters_of_that_one_project_are_listed():
    project, other = ProjectFactory(), ProjectFactory()
    for name in ("小明", "老王", "王伯"):
        Character.objects.create(project=project, name=name)
    Character.objects.create(project=other, name="小明")

    found = character_list_named(project_id=project.pk, names=iter(["小明", "老王", "李雷"]))

    assert sorted((character.project_id, character.name) for character in found) == [
        (project.pk, "小明"),
        (project.pk, "老王"),
    ]
