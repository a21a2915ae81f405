from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from memory_app.models import ContextMessage, ConversationContext
from memory_app.services.conversation import NewMessage, context_append, context_create
from tests.fakes.openai_server import RawAnswer

pytestmark = pytest.mark.django_db

FAMILIES = ["/api/context", "/api/memory/context"]


def create_path(family: str) -> str:
    return f"{family}/create" if family == "/api/context" else family


@pytest.mark.parametrize("family", FAMILIES)
def test_create_and_get_a_context(auth_client, family, project):
    response = auth_client.post(
        create_path(family),
        {"max_messages": 30, "max_tokens": 4000, "context_type": "comic_generation", "project_id": "proj-001"},
        format="json",
    )

    assert response.status_code == 201
    data = response.json()["data"]
    context = ConversationContext.objects.get()
    assert data["context_id"] == str(context.id)
    assert (data["max_messages"], data["max_tokens"], data["context_type"], data["project_id"]) == (
        30,
        4000,
        "comic_generation",
        "proj-001",
    )
    assert (data["message_count"], data["token_count"], data["is_default"]) == (0, 0, False)

    fetched = auth_client.get(f"{family}/{context.id}").json()["data"]
    assert fetched == data


def test_credentials_in_context_metadata_are_redacted_in_the_answer_and_the_row(auth_client):
    metadata = {
        "bearer": "abc123",
        "session_id": "s-1",
        "sessionId": "s-2",
        "Cookie": "sid=s-3",
        "auth": {"Authorization": "Bearer abc123", "refresh_token": "r-1", "credentials": {"user": "u", "pw": "p"}},
        "tabs": [{"x-session-key": "k-1", "jsessionid": "j-1"}],
        "sessions": 3,
        "session_count": 4,
        "max_tokens": 100,
        "title": "Chapter 2",
    }

    response = auth_client.post("/api/context/create", {"metadata": metadata}, format="json")

    redacted = {
        "bearer": "[REDACTED]",
        "session_id": "[REDACTED]",
        "sessionId": "[REDACTED]",
        "Cookie": "[REDACTED]",
        "auth": {"Authorization": "[REDACTED]", "refresh_token": "[REDACTED]", "credentials": "[REDACTED]"},
        "tabs": [{"x-session-key": "[REDACTED]", "jsessionid": "[REDACTED]"}],
        "sessions": 3,
        "session_count": 4,
        "max_tokens": 100,
        "title": "Chapter 2",
    }
    assert response.status_code == 201, response.content[:300]
    assert response.json()["data"]["metadata"] == redacted
    assert ConversationContext.objects.get().metadata == redacted


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_messages": 0}, "max_messages"),
        ({"max_messages": "ten"}, "max_messages"),
        ({"max_messages": 2.5}, "max_messages"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"context_type": "bad type!"}, "context_type"),
    ],
)
def test_create_with_bad_limits_is_400_naming_the_field(auth_client, family, body, field):
    response = auth_client.post(create_path(family), body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert list(error["details"]["fields"]) == [field]
    assert ConversationContext.objects.count() == 0


def test_create_in_someone_elses_project_is_404(other_client, project):
    response = other_client.post("/api/context/create", {"project_id": "proj-001"}, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["details"]["project_id"] == "proj-001"
    assert ConversationContext.objects.count() == 0


def test_limit_per_user_is_409(auth_client, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"max_contexts_per_user": 1})}
    )
    assert auth_client.post("/api/context/create", {}, format="json").status_code == 201

    response = auth_client.post("/api/memory/context", {}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "CONTEXT_LIMIT_REACHED"
    assert ConversationContext.objects.count() == 1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("suffix", ["", "/clear", "/messages"])
def test_unknown_or_someone_elses_context_is_404_with_a_suggestion(auth_client, other_user, family, suffix):
    theirs = context_create(owner=other_user)
    for context_id in [str(theirs.id), str(uuid.uuid4()), "not-a-uuid"]:
        method = auth_client.post if suffix == "/clear" else auth_client.get
        response = method(f"{family}/{context_id}{suffix}")

        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "MEMORY_NOT_FOUND"
        assert error["details"]["context_id"] == context_id
        assert "/api/context/" in error["details"]["suggestion"]
    assert auth_client.delete(f"{family}/{theirs.id}").status_code == 404
    assert ConversationContext.objects.filter(pk=theirs.pk).exists()


@pytest.mark.parametrize(
    "body", [{"role": "user", "content": "hello"}, {"role": "narrator", "content": "hello"}, {"messages": []}]
)
def test_appending_to_an_unknown_or_someone_elses_context_is_404_whatever_the_body(auth_client, other_user, body):
    theirs = context_create(owner=other_user)
    for context_id in [str(theirs.id), str(uuid.uuid4()), "not-a-uuid"]:
        response = auth_client.post(f"/api/context/{context_id}/messages", body, format="json")

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "MEMORY_NOT_FOUND"
        assert response.json()["error"]["details"]["context_id"] == context_id
    assert ContextMessage.objects.count() == 0
    theirs.refresh_from_db()
    assert (theirs.next_position, theirs.window_count) == (0, 0)


def test_staff_append_to_someone_elses_context_keeps_its_owner(staff_client, user):
    context = context_create(owner=user)

    response = staff_client.post(f"/api/context/{context.id}/messages", {"role": "user", "content": "hi"})

    assert response.status_code == 201
    assert response.json()["data"]["context"]["owner"] == "alice"
    assert list(ContextMessage.objects.filter(context=context).values_list("content", flat=True)) == ["hi"]


def test_an_append_to_a_full_window_reads_the_context_once_and_locks_it_in_that_read(auth_client, user):
    context = context_create(owner=user, max_messages=2)
    for number in range(2):
        context_append(context=context, messages=NewMessage(role="user", content=f"m{number}"))

    with CaptureQueriesContext(connection) as captured:
        response = auth_client.post(f"/api/context/{context.id}/messages", {"role": "user", "content": "m2"})

    assert response.status_code == 201
    assert response.json()["data"]["context"]["message_count"] == 2
    statements = [query["sql"] for query in captured.captured_queries]
    table = ConversationContext._meta.db_table
    reads = [sql for sql in statements if sql.startswith("SELECT") and f'FROM "{table}"' in sql]
    assert len(reads) == 1
    kinds = [sql.split()[0] for sql in statements]
    if connection.vendor == "postgresql":
        assert f'FOR UPDATE OF "{table}"' in reads[0]
        # Token, lock, then one statement inserts, indexes the new message, archives the oldest message and saves
        # the context's totals.
        assert kinds == ["SELECT", "SAVEPOINT", "SELECT", "WITH", "RELEASE"]
    else:
        # The same writes as plain statements: save the totals (less the oldest message), archive it, insert, index
        # the new message.
        assert kinds == ["SELECT", "SAVEPOINT", "SELECT", "UPDATE", "UPDATE", "INSERT", "INSERT", "RELEASE"]
    context.refresh_from_db()
    assert (context.window_count, context.next_position) == (2, 3)
    assert list(ContextMessage.objects.filter(context=context, archived=False).values_list("content", flat=True)) == [
        "m1",
        "m2",
    ]


@pytest.mark.django_db(transaction=True)
def test_an_append_as_served_sends_a_pinned_number_of_statements(auth_client, user):
    # Outside a test's transaction, as a server runs it: the token, the context read, then the write that happens
    # only if the context is unchanged (PostgreSQL: one query that locks and writes, commit included; SQLite: under
    # the database's write lock the totals saved if the context is unchanged, archive the oldest, insert, index,
    # commit). The next append to the same context is computed from what this one left: no read.
    context = context_create(owner=user, max_messages=2)
    for number in range(2):
        context_append(context=context, messages=NewMessage(role="user", content=f"m{number}"))

    with CaptureQueriesContext(connection) as first:
        response = auth_client.post(f"/api/context/{context.id}/messages", {"role": "user", "content": "m2"})
    with CaptureQueriesContext(connection) as second:
        again = auth_client.post(f"/api/context/{context.id}/messages", {"role": "user", "content": "m3"})

    assert (response.status_code, again.status_code) == (201, 201)
    assert again.json()["data"]["context"]["message_count"] == 2
    # But a statement's PREPARE, once per connection before its first run there.
    first_kinds = [query["sql"].split()[0] for query in first.captured_queries if query["sql"].split()[0] != "PREPARE"]
    second_kinds = [query["sql"].split()[0] for query in second.captured_queries]
    if connection.vendor == "postgresql":
        assert first_kinds == ["SELECT", "SELECT", "EXECUTE"]
        assert second_kinds == ["SELECT", "EXECUTE"]
        assert second.captured_queries[-1]["sql"].startswith("EXECUTE comicmem_context_lock_")
        assert "; EXECUTE comicmem_append_" in second.captured_queries[-1]["sql"]
    else:
        writes = ["BEGIN", "UPDATE", "UPDATE", "INSERT", "INSERT", "COMMIT"]
        assert first_kinds == ["SELECT", "SELECT", *writes]
        assert second_kinds == ["SELECT", *writes]
    context.refresh_from_db()
    assert (context.window_count, context.next_position) == (2, 4)
    assert list(ContextMessage.objects.filter(context=context, archived=False).values_list("content", flat=True)) == [
        "m2",
        "m3",
    ]


def test_staff_see_every_context(staff_client, user):
    context = context_create(owner=user)

    assert staff_client.get(f"/api/context/{context.id}").json()["data"]["owner"] == "alice"


@pytest.mark.parametrize("family", FAMILIES)
def test_list_is_paginated_and_limited_to_the_owner(auth_client, user, other_user, family):
    mine = [context_create(owner=user) for _ in range(3)]
    context_create(owner=other_user)

    page = auth_client.get(f"{family}/?page_size=2").json()["data"]

    assert page["count"] == 3
    assert len(page["results"]) == 2
    assert {c["context_id"] for c in page["results"]} <= {str(c.id) for c in mine}
    assert auth_client.get(f"{family}/?page_size=100000").status_code == 400


@pytest.mark.parametrize("family", FAMILIES)
def test_append_one_or_many_and_read_the_window_and_the_archive(auth_client, user, family):
    context = context_create(owner=user, max_messages=3)

    one = auth_client.post(f"{family}/{context.id}/messages", {"role": "system", "content": "persona"}, format="json")
    many = auth_client.post(
        f"{family}/{context.id}/messages",
        [{"role": "user", "content": f"m{n}"} for n in range(3)],
        format="json",
    )

    assert (one.status_code, many.status_code) == (201, 201)
    assert [m["position"] for m in one.json()["data"]["messages"]] == [0]
    body = many.json()["data"]
    assert [(m["position"], m["archived"]) for m in body["messages"]] == [(1, True), (2, False), (3, False)]
    assert (body["context"]["message_count"], body["context"]["token_count"]) == (3, 2 + 1 + 1)

    window = auth_client.get(f"{family}/{context.id}/messages").json()["data"]
    assert [(m["position"], m["role"], m["content"]) for m in window["results"]] == [
        (0, "system", "persona"),
        (2, "user", "m1"),
        (3, "user", "m2"),
    ]
    assert window["include_archived"] is False
    everything = auth_client.get(f"{family}/{context.id}/messages?include_archived=true").json()["data"]
    assert [m["position"] for m in everything["results"]] == [0, 1, 2, 3]
    assert auth_client.get(f"{family}/{context.id}/messages?include_archived=maybe").status_code == 400

    info = auth_client.get(f"{family}/{context.id}").json()["data"]
    assert (info["message_count"], info["token_count"]) == (3, 4)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "robot", "content": "x"}, "role"),
        ({"role": "user", "content": ""}, "content"),
        ({"role": "user", "content": "  "}, "content"),
        ({"role": "user"}, "content"),
        ({"role": "user", "content": "x" * 101}, "content"),
        ([{"role": "user", "content": "ok"}, {"role": "user", "content": ""}], "messages[1].content"),
        ([], "messages"),
        ("just text", "messages"),
        ([{"role": "user", "content": "ok"}, "x"], "messages[1]"),
    ],
)
def test_bad_messages_are_400_naming_the_field_and_nothing_is_written(auth_client, user, settings, body, field):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"max_message_chars": 100})}
    )
    context = context_create(owner=user)

    response = auth_client.post(f"/api/memory/context/{context.id}/messages", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert list(error["details"]["fields"]) == [field]
    assert ContextMessage.objects.count() == 0


def test_message_over_the_token_budget_is_400_and_nothing_written(auth_client, user):
    context = context_create(owner=user, max_tokens=3)

    response = auth_client.post(
        f"/api/context/{context.id}/messages", {"role": "user", "content": "word word word word"}, format="json"
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "CONTEXT_MESSAGE_TOO_LARGE"
    assert (error["details"]["token_count"], error["details"]["max_tokens"]) == (4, 3)
    assert ContextMessage.objects.count() == 0


def test_system_messages_over_budget_is_400(auth_client, user):
    context = context_create(owner=user, max_messages=1)
    context_append(context=context, messages=NewMessage(role="system", content="one"))

    response = auth_client.post(
        f"/api/context/{context.id}/messages", {"role": "system", "content": "two"}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "CONTEXT_BUDGET_EXCEEDED"
    assert ContextMessage.objects.count() == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_clear_and_delete(auth_client, user, family):
    context = context_create(owner=user)
    context_append(context=context, messages=NewMessage(role="system", content="persona"))
    context_append(context=context, messages=NewMessage(role="user", content="hi"))

    cleared = auth_client.post(f"{family}/{context.id}/clear")

    assert cleared.status_code == 200
    assert (cleared.json()["data"]["removed_messages"], cleared.json()["data"]["message_count"]) == (1, 1)
    assert list(ContextMessage.objects.values_list("content", flat=True)) == ["persona"]

    everything = auth_client.post(f"{family}/{context.id}/clear", {"keep_system": False}, format="json")
    assert everything.json()["data"]["message_count"] == 0

    deleted = auth_client.delete(f"{family}/{context.id}")
    assert deleted.json()["data"] == {"context_id": str(context.id), "deleted": True}
    assert ConversationContext.objects.count() == 0
    assert auth_client.get(f"{family}/{context.id}").status_code == 404


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_context_uses_the_default_context(auth_client, user, family):
    first = auth_client.post(
        f"{family}/generate-with-context", {"prompt": "My cat is called Mochi."}, format="json"
    ).json()["data"]
    second = auth_client.post(
        f"{family}/generate-with-context", {"prompt": "What is my cat called?"}, format="json"
    ).json()["data"]

    default = ConversationContext.objects.get(owner=user)
    assert default.is_default
    assert first["context_id"] == second["context_id"] == str(default.id)
    assert second["message"]["content"] == "From earlier in this conversation:\n- You said: My cat is called Mochi."
    assert second["message"]["role"] == "assistant"
    assert second["usage"]["total_tokens"] == second["usage"]["prompt_tokens"] + second["usage"]["completion_tokens"]
    assert (second["provider"], second["replayed"]) == ("offline", False)
    assert ContextMessage.objects.filter(context=default).count() == 4


def test_generate_with_a_given_context(auth_client, user):
    context = context_create(owner=user)
    context_append(context=context, messages=NewMessage(role="user", content="The castle is blue."))

    data = auth_client.post(
        "/api/context/generate-with-context",
        {"context_id": str(context.id), "prompt": "What colour is the castle?", "temperature": 0.2},
        format="json",
    ).json()["data"]

    assert data["message"]["content"] == "From earlier in this conversation:\n- You said: The castle is blue."
    assert data["context"]["message_count"] == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "temperature": 3}, "temperature"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "context_id": "nope"}, "context_id"),
        ({"prompt": "x", "system": " "}, "system"),
    ],
)
def test_generate_bad_input_is_400(auth_client, body, field):
    response = auth_client.post("/api/context/generate-with-context", body, format="json")

    assert response.status_code == 400
    assert list(response.json()["error"]["details"]["fields"]) == [field]
    assert (ConversationContext.objects.count(), ContextMessage.objects.count()) == (0, 0)


def test_generate_in_someone_elses_context_is_404(auth_client, other_user):
    theirs = context_create(owner=other_user)

    response = auth_client.post(
        "/api/context/generate-with-context", {"context_id": str(theirs.id), "prompt": "hi"}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["error"]["details"]["context_id"] == str(theirs.id)
    assert ContextMessage.objects.count() == 0


def test_generate_provider_failure_is_502_and_a_retry_does_not_duplicate(auth_client, user, openai_llm):
    context = context_create(owner=user)
    openai_llm.fail(500)
    body = {"context_id": str(context.id), "prompt": "Draw a cat."}

    failed = auth_client.post("/api/context/generate-with-context", body, format="json", HTTP_X_REQUEST_ID="req-42")

    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "PROVIDER_ERROR"
    prompt = ContextMessage.objects.get(context=context)
    assert (prompt.content, prompt.unanswered) == ("Draw a cat.", True)
    window = auth_client.get(f"/api/memory/context/{context.id}/messages").json()["data"]["results"]
    assert [(m["content"], m["unanswered"]) for m in window] == [("Draw a cat.", True)]

    openai_llm.reply("Here is a cat.")
    retried = auth_client.post("/api/context/generate-with-context", body, format="json", HTTP_X_REQUEST_ID="req-42")

    assert retried.status_code == 200
    assert retried.json()["data"]["message"]["content"] == "Here is a cat."
    assert list(ContextMessage.objects.order_by("position").values_list("role", "content", "unanswered")) == [
        ("user", "Draw a cat.", False),
        ("assistant", "Here is a cat.", False),
    ]
    assert retried.json()["data"]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            RawAnswer(b'{"choices": [{"message": {"content": "Here is'),
            "The LLM provider's answer is not JSON (application/json, 45 bytes): cut short, or a page from something "
            """in between: '{"choices": [{"message": {"content": "Here is'""",
        ),
        (
            RawAnswer(b"<html><body>Bad gateway</body></html>", content_type="text/html"),
            "The LLM provider's answer is not JSON (text/html, 37 bytes): cut short, or a page from something in "
            "between: '<html><body>Bad gateway</body></html>'",
        ),
        (RawAnswer(b'{"choices": []}'), "The LLM provider returned no message."),
    ],
)
def test_generate_with_a_malformed_provider_answer_is_502_and_stores_no_reply(
    auth_client, user, openai_llm, answer, message
):
    context = context_create(owner=user)
    openai_llm.reply_raw(answer)

    response = auth_client.post(
        "/api/context/generate-with-context", {"context_id": str(context.id), "prompt": "Draw a cat."}, format="json"
    )

    assert response.status_code == 502, response.content[:300]
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("PROVIDER_ERROR", message)
    assert list(ContextMessage.objects.values_list("role", "content", "unanswered")) == [("user", "Draw a cat.", True)]


def test_generate_keeps_a_reply_holding_nul_and_lone_surrogates_without_them(auth_client, user, openai_llm):
    context = context_create(owner=user)
    openai_llm.reply("A\x00 cat\ud800.")

    response = auth_client.post(
        "/api/context/generate-with-context", {"context_id": str(context.id), "prompt": "Draw a cat."}, format="json"
    )

    assert response.status_code == 200, response.content[:300]
    assert response.json()["data"]["message"]["content"] == "A cat\ufffd."
    assert list(ContextMessage.objects.order_by("position").values_list("role", "content")) == [
        ("user", "Draw a cat."),
        ("assistant", "A cat\ufffd."),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_export_and_import_through_the_api(auth_client, client_for, user, family):
    context = context_create(owner=user, context_type="comic")
    context_append(context=context, messages=NewMessage(role="user", content="hello"))

    exported = auth_client.get(f"{family}/export?context_id={context.id}").json()["data"]

    assert list(exported["context_persistence"]["contexts"]) == [str(context.id)]
    context_id = context.pk
    context.delete()
    imported = auth_client.post(f"{family}/import", exported, format="json")
    assert imported.status_code == 201
    assert imported.json()["data"] == {"imported": [str(context_id)], "count": 1}
    restored = ConversationContext.objects.get(pk=context_id)
    assert (restored.context_type, restored.owner) == ("comic", user)
    assert list(restored.messages.values_list("content", flat=True)) == ["hello"]

    everything = auth_client.get(f"{family}/export").json()["data"]["context_persistence"]
    assert list(everything["contexts"]) == [str(context_id)]


def test_import_of_a_bad_document_is_400_and_imports_nothing(auth_client):
    response = auth_client.post("/api/context/import", {"context_persistence": {"version": "1.0"}}, format="json")

    assert response.status_code == 400
    assert list(response.json()["error"]["details"]["fields"]) == ["context_persistence.contexts"]
    assert ConversationContext.objects.count() == 0


def test_routes_need_authentication(api_client):
    assert api_client.get("/api/context/").status_code == 401
    assert api_client.post("/api/context/generate-with-context", {"prompt": "x"}, format="json").status_code == 401
    assert ConversationContext.objects.count() == 0


def test_the_output_serializers_answer_exactly_what_their_declared_fields_produce(user, project):
    # The hot path's hand-written representations must never drift from the declared fields (and the schema).
    from rest_framework import serializers

    from memory_app.api.conversation import ContextSerializer, MessageSerializer

    plain = context_create(owner=user)
    rich = context_create(owner=user, project=project, context_type="chapter-1", metadata={"k": ["v", 1]})
    context_append(context=rich, messages=NewMessage(role="system", content="你是漫画编剧。"))
    context_append(context=rich, messages=NewMessage(role="user", content="The hero opens the door."))
    rich.refresh_from_db()
    ContextMessage.objects.filter(context=rich, role="user").update(unanswered=True, archived=True)

    for context in (plain, rich):
        serializer = ContextSerializer(context)
        assert serializer.to_representation(context) == serializers.ModelSerializer.to_representation(
            serializer, context
        )
    messages = list(ContextMessage.objects.filter(context=rich).order_by("position"))
    assert len(messages) == 2
    for message in messages:
        serializer = MessageSerializer(message)
        assert serializer.to_representation(message) == serializers.ModelSerializer.to_representation(
            serializer, message
        )
    assert MessageSerializer(messages[1]).data["created_at"].endswith("Z")
