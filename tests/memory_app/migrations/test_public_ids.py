"""0013: existing projects and styles keep their key (foreign keys, storage folders, archive scopes) and get it
as their public id; afterwards another owner may take the same ids."""

from __future__ import annotations

from importlib import import_module

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("memory_app", "0012_ordering_by_foreign_key_columns")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_old_rows_keep_their_key_and_get_it_as_public_id():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = _migrate(BEFORE)
    try:
        # The built-in style as 0010 ships it (an earlier transactional test's flush may have removed it).
        import_module("memory_app.migrations.0010_manga_shonen_style").create(old, None)
        user = old.get_model("auth", "User").objects.create(username="alice")
        old.get_model("memory_app", "Project").objects.create(id="alpha", owner=user, name="Old")
        style = old.get_model("memory_app", "StyleTemplate").objects.create(template_id="noir", owner=user, name="N")
        record = old.get_model("memory_app", "HistoryRecord").objects.create(
            project_id="alpha", timestamp=timezone.now(), action="project_created", summary="old", details={}
        )
        old.get_model("memory_app", "StyleUsage").objects.create(style=style, project_id="alpha", user=user)
    finally:
        _migrate(latest)

    from django.contrib.auth import get_user_model

    from memory_app.models import HistoryRecord, Project, StyleTemplate, StyleUsage
    from memory_app.services.creative import style_create
    from memory_app.services.projects import project_create

    assert list(Project.objects.values_list("pk", "public_id", "owner__username")) == [("alpha", "alpha", "alice")]
    assert list(StyleTemplate.objects.filter(owner__isnull=False).values_list("pk", "public_id")) == [("noir", "noir")]
    assert StyleTemplate.objects.get(pk="manga_shonen").public_id == "manga_shonen"
    assert HistoryRecord.objects.get(pk=record.pk).project_id == "alpha"
    assert list(StyleUsage.objects.values_list("style_id", "project_id")) == [("noir", "alpha")]

    bob = get_user_model().objects.create(username="bob")
    project = project_create(owner=bob, project_id="alpha", name="Bob's")
    noir = style_create(user=bob, template_id="noir", name="Bob noir")
    assert (project.public_id, project.pk != "alpha", noir.public_id, noir.pk != "noir") == (
        "alpha",
        True,
        "noir",
        True,
    )
