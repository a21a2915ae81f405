"""The owner-checked, locking read of a context (``context_get(for_update=True)``), which every append runs."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from memory_app.errors import NotFound
from memory_app.models import ConversationContext
from memory_app.selectors.conversation import context_get
from memory_app.services.conversation import context_create

pytestmark = pytest.mark.django_db


def _values(context: ConversationContext) -> dict[str, object]:
    return {field.attname: getattr(context, field.attname) for field in ConversationContext._meta.concrete_fields}


def test_locked_read_gives_what_the_unlocked_read_gives_with_owner_and_project_in_one_query(user, project):
    created = context_create(owner=user, project=project, metadata={"mood": "calm"})
    expected = context_get(user=user, context_id=created.id)

    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        locked = context_get(user=user, context_id=str(created.id), for_update=True)
        owner, public_id = locked.owner.username, locked.project.public_id

    assert _values(locked) == _values(expected)
    assert (owner, public_id) == ("alice", project.public_id)
    reads = [query["sql"] for query in captured.captured_queries if query["sql"].startswith("SELECT")]
    assert len(reads) == 1
    if connection.vendor == "postgresql":
        assert f'FOR UPDATE OF "{ConversationContext._meta.db_table}"' in reads[0]


def test_locked_read_of_a_context_without_project(user):
    created = context_create(owner=user)

    with transaction.atomic():
        locked = context_get(user=user, context_id=created.id, for_update=True)

    assert locked.project is None
    assert locked.owner == user


def test_locked_read_refuses_someone_elses_context_and_an_unknown_id(user, other_user):
    theirs = context_create(owner=other_user)

    with transaction.atomic(), pytest.raises(NotFound):
        context_get(user=user, context_id=theirs.id, for_update=True)
    with transaction.atomic(), pytest.raises(NotFound):
        context_get(user=user, context_id="not-a-uuid", for_update=True)
    with transaction.atomic(), pytest.raises(NotFound):
        context_get(user=user, context_id="00000000-0000-0000-0000-000000000000", for_update=True)


def test_staff_locked_read_finds_another_users_context_with_its_owner(user, staff_user, project):
    theirs = context_create(owner=user, project=project)

    with transaction.atomic():
        locked = context_get(user=staff_user, context_id=theirs.id, for_update=True)

    assert locked.pk == theirs.pk
    assert locked.owner.username == "alice"
    assert locked.project.public_id == project.public_id
