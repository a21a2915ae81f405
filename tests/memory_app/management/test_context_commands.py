from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from memory_app.models import ContextMessage, ConversationContext
from memory_app.services.conversation import NewMessage, context_append, context_create

pytestmark = pytest.mark.django_db


def test_export_to_a_file_then_import_for_another_user(user, other_user, tmp_path):
    context = context_create(owner=user, context_type="comic")
    context_append(context=context, messages=NewMessage(role="system", content="你是一位专业的漫画创作助手"))
    context_append(context=context, messages=NewMessage(role="user", content="帮我生成一个少年漫画的主角"))
    target = tmp_path / "contexts.json"

    call_command("export_contexts", "alice", "--output", str(target))

    document = json.loads(target.read_text(encoding="utf-8"))
    assert list(document["context_persistence"]["contexts"]) == [str(context.id)]
    assert not (tmp_path / "contexts.json.partial").exists()
    context_id = context.pk
    context.delete()

    call_command("import_contexts", "bob", str(target))

    restored = ConversationContext.objects.get(pk=context_id)
    assert restored.owner == other_user
    assert list(restored.messages.order_by("position").values_list("role", "content")) == [
        ("system", "你是一位专业的漫画创作助手"),
        ("user", "帮我生成一个少年漫画的主角"),
    ]


def test_import_of_a_bad_file_fails_and_imports_nothing(user, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "context_persistence": {
                    "version": "1.0",
                    "contexts": {
                        "11111111-1111-4111-8111-111111111111": {
                            "conversation_id": "11111111-1111-4111-8111-111111111111",
                            "messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": ""}],
                        }
                    },
                }
            }
        )
    )

    with pytest.raises(CommandError, match="VALIDATION_ERROR"):
        call_command("import_contexts", "alice", str(path))

    assert (ConversationContext.objects.count(), ContextMessage.objects.count()) == (0, 0)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_contexts", "alice", str(tmp_path / "broken.json"))


def test_export_of_an_unknown_user_or_context_fails(user):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("export_contexts", "nobody")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("export_contexts", "alice", "--context", "11111111-1111-4111-8111-111111111111")
