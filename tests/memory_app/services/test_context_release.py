"""Release of inactive contexts (exported, verified, removed), of those beyond max_active_contexts, their restore
by the owner, and the owner's choice of default context."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from memory_app import tasks
from memory_app.models import ContextMessage, ConversationContext, ReleasedContext
from memory_app.services.conversation import (
    NewMessage,
    context_append,
    context_create,
    context_release,
    contexts_release,
)
from memory_app.services.conversation import release as release_module
from tests.memory_app.test_schedules import set_memory

pytestmark = pytest.mark.django_db

OLD = timezone.now() - dt.timedelta(days=3)


def _context(owner, *texts: str, project=None, old: bool = True, **extra) -> ConversationContext:
    context = context_create(owner=owner, project=project, **extra)
    if texts:
        context_append(user=owner, context_id=context.id, messages=[NewMessage(role="user", content=t) for t in texts])
    if old:
        ConversationContext.objects.filter(pk=context.pk).update(last_updated=OLD)
    context.refresh_from_db()
    return context


def test_an_inactive_context_is_exported_verified_and_removed(media, user, project):
    inactive = _context(user, "first", "second", project=project)
    active = _context(user, "recent", old=False)

    result = tasks.contexts_release_task.apply().get()

    assert (result["inactive_contexts"], result["released_contexts"], result["contexts_held_in_process"]) == (1, 1, 0)
    assert list(ConversationContext.objects.values_list("pk", flat=True)) == [active.pk]
    assert not ContextMessage.objects.filter(context_id=inactive.pk).exists()
    released = ReleasedContext.objects.get()
    assert (released.pk, released.owner, released.reason, released.message_count) == (inactive.pk, user, "inactive", 2)
    assert released.project_public_id == "proj-001"
    with default_storage.open(released.file_name, "rb") as handle:
        document = json.loads(gzip.decompress(handle.read()))
    entry = document["context_persistence"]["contexts"][str(inactive.pk)]
    assert [message["content"] for message in entry["messages"]] == ["first", "second"]


def test_a_context_written_during_its_export_is_kept(media, user, monkeypatch):
    context = _context(user, "old")
    real = release_module._document_bytes

    def export_then_append(ctx):
        exported = real(ctx)
        context_append(user=user, context_id=ctx.id, messages=[NewMessage(role="user", content="meanwhile")])
        return exported

    monkeypatch.setattr(release_module, "_document_bytes", export_then_append)

    assert context_release(context=context, reason="inactive") is False
    assert ConversationContext.objects.filter(pk=context.pk).exists()
    assert ContextMessage.objects.filter(context=context).count() == 2
    assert not ReleasedContext.objects.exists()
    assert default_storage.listdir(f"released_contexts/{user.pk}")[1] == []


def test_beyond_max_active_contexts_the_least_recently_updated_are_released(media, settings, user):
    set_memory(settings, "conversation", max_active_contexts=2)
    contexts = [_context(user, f"m{index}", old=False) for index in range(4)]
    for minutes, context in zip([40, 30, 20, 10], contexts, strict=True):
        ConversationContext.objects.filter(pk=context.pk).update(
            last_updated=timezone.now() - dt.timedelta(minutes=minutes)
        )

    report = contexts_release()

    assert (report.inactive_contexts, report.over_limit_contexts) == (0, 2)
    assert set(report.released) == {str(contexts[0].pk), str(contexts[1].pk)}
    assert set(ConversationContext.objects.values_list("pk", flat=True)) == {contexts[2].pk, contexts[3].pk}
    assert set(ReleasedContext.objects.values_list("reason", flat=True)) == {"over_limit"}


def test_the_default_context_is_kept_through_inactivity(media, user):
    default = _context(user, "hello", is_default=True)

    assert contexts_release().released == []
    assert ConversationContext.objects.filter(pk=default.pk).exists()


def test_the_owner_lists_and_restores_a_released_context(media, user, auth_client, other_client, settings):
    set_memory(settings, "conversation", summarize_evicted=True, default_max_messages=2)
    context = _context(user, "one", "two", "three")
    summary = ContextMessage.objects.filter(context=context, is_summary=True).values_list("content", flat=True).first()

    def stored(ctx):
        return list(
            ContextMessage.objects.filter(context=ctx)
            .order_by("position")
            .values_list("content", "archived", "is_summary")
        )

    before = stored(context)
    contexts_release()

    listed = auth_client.get("/api/context/released/")
    assert listed.status_code == 200
    [item] = listed.json()["data"]["results"]
    assert (item["context_id"], item["reason"], item["message_count"]) == (
        str(context.pk),
        "inactive",
        3 + bool(summary),
    )
    assert other_client.get("/api/context/released/").json()["data"]["results"] == []
    assert other_client.post(f"/api/context/released/{context.pk}/restore").status_code == 404
    assert auth_client.post("/api/context/released/not-a-uuid/restore").status_code == 404

    restored = auth_client.post(f"/api/memory/context/released/{context.pk}/restore")

    assert restored.status_code == 201, restored.json()
    assert restored.json()["data"]["context_id"] == str(context.pk)
    back = ConversationContext.objects.get(pk=context.pk)
    assert back.last_updated > OLD  # not taken again by the next release run
    assert stored(back) == before
    assert summary is not None and (summary, False, True) in before
    assert not ReleasedContext.objects.exists()
    assert auth_client.post(f"/api/context/released/{context.pk}/restore").status_code == 404


def test_staff_see_every_released_context(media, user, staff_client):
    _context(user, "x")
    contexts_release()

    assert len(staff_client.get("/api/context/released/").json()["data"]["results"]) == 1


def test_the_owner_chooses_the_default_and_generate_uses_it(media, user, other_client, auth_client):
    first = _context(user, old=False, is_default=True)
    chosen = _context(user, old=False)

    answer = auth_client.post(f"/api/context/{chosen.pk}/default")

    assert answer.status_code == 200 and answer.json()["data"]["is_default"] is True
    assert list(ConversationContext.objects.filter(is_default=True).values_list("pk", flat=True)) == [chosen.pk]
    assert other_client.post(f"/api/context/{first.pk}/default").status_code == 404
    generated = auth_client.post("/api/context/generate-with-context", {"prompt": "hi"}, format="json")
    assert generated.status_code == 200, generated.json()
    assert generated.json()["data"]["context_id"] == str(chosen.pk)


def test_without_a_default_generate_still_creates_one(auth_client, user):
    generated = auth_client.post("/api/context/generate-with-context", {"prompt": "hi"}, format="json")

    assert generated.status_code == 200
    assert ConversationContext.objects.get(pk=generated.json()["data"]["context_id"]).is_default is True


def test_the_new_routes_are_in_the_openapi_schema(api_client):
    paths = api_client.get("/api/schema/", {"format": "json"}).json()["paths"]

    assert "post" in paths["/api/context/{context_id}/default/"]
    assert "get" in paths["/api/context/released/"]
    assert "post" in paths["/api/context/released/{context_id}/restore/"]
