"""Concurrent edits of one project's characters (PostgreSQL: real row locks): versions stay sequential, names
stay unique, and edits interleaved with a merge neither deadlock nor lose a change."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from memory_app.errors import ComicmemError
from memory_app.models import Character, CharacterVersion
from memory_app.services.characters import character_create, character_merge, character_update


def _run_all(targets) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def wrap(target):
        def run() -> None:
            try:
                start.wait(timeout=10)
                target()
            except BaseException as exc:  # noqa: BLE001 - returned to the test
                errors.append(exc)
            finally:
                connection.close()

        return run

    threads = [threading.Thread(target=wrap(target)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_edits_get_sequential_versions_and_unique_names(user, project):
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    character = character_create(user=user, project=project, name="林小雨")
    other = character_create(user=user, project=project, name="老周")

    def edit(number: int):
        return lambda: character_update(user=user, character=character, fields={"colors": {f"c{number}": "#111111"}})

    def claim(target: Character):
        return lambda: character_update(user=user, character=target, fields={"aliases": ["小雨"]})

    errors = _run_all([edit(1), edit(2), edit(3), claim(character), claim(other)])

    # One of the two claims of the alias won; the other is a Conflict, nothing else failed.
    assert [type(error).__name__ for error in errors] == ["Conflict"]
    versions = list(CharacterVersion.objects.filter(character=character).values_list("version", flat=True))
    assert versions == list(range(1, len(versions) + 1))
    character.refresh_from_db()
    assert len(character.colors) == 1  # each edit replaces the colours: one of them is last
    owners = [item.name for item in Character.objects.filter(project=project) if "小雨" in item.aliases]
    assert len(owners) == 1


@pytest.mark.django_db(transaction=True)
def test_edits_and_a_merge_at_once_do_not_deadlock(user, project):
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    kept = character_create(user=user, project=project, name="林小雨")
    merged = character_create(user=user, project=project, name="小雨")

    errors = _run_all(
        [
            lambda: character_merge(user=user, character=merged, into=kept),
            lambda: character_update(user=user, character=merged, fields={"personality_traits": ["活泼"]}),
            lambda: character_update(user=user, character=kept, fields={"personality_traits": ["安静"]}),
        ]
    )

    # The edit of the merged character either ran first (and was merged) or found it gone (404).
    assert all(isinstance(error, ComicmemError) and error.status_code == 404 for error in errors), errors
    kept.refresh_from_db()
    assert kept.aliases == ["小雨"]
    assert not Character.objects.filter(pk=merged.pk).exists()
