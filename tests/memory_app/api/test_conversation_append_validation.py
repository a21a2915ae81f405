"""A message to append is validated once, by the append service; the view checks the body's shape only. The
answers are what they have always been: the same field names and messages as DRF's serializer fields gave."""

from __future__ import annotations

import pytest

from memory_app.api.conversation import MessageInputSerializer
from memory_app.models import ContextMessage
from memory_app.services.conversation import MISSING, context_create, message_problems

pytestmark = pytest.mark.django_db

ITEMS = [
    {"role": "user", "content": "fine"},
    {"role": "robot", "content": "x"},
    {"role": "", "content": "x"},
    {"role": 0, "content": "x"},
    {"role": True, "content": "x"},
    {"role": None, "content": "x"},
    {"content": "x"},
    {"role": "user"},
    {"role": "user", "content": None},
    {"role": "user", "content": 5},
    {"role": "user", "content": ["x"]},
    {"role": "user", "content": ""},
    {"role": "user", "content": " \n\t"},
    {"role": "user", "content": "a\x00b"},
    {"role": "user", "content": "a\ud800b"},
    {"role": "user", "content": "\x00\udfff"},
    {"role": 1.5, "content": 2},
    {},
]


@pytest.mark.parametrize("item", ITEMS, ids=[repr(item) for item in ITEMS])
def test_the_service_refuses_what_the_schema_serializer_refuses_with_the_same_messages(item):
    expected = {name: [str(problem) for problem in problems] for name, problems in _serializer_errors(item).items()}

    problems = message_problems(role=item.get("role", MISSING), content=item.get("content", MISSING), prefix="p.")

    assert problems == {f"p.{name}": messages for name, messages in expected.items()}


def _serializer_errors(item):
    serializer = MessageInputSerializer(data=item)
    serializer.is_valid()
    return serializer.errors


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"role": 0, "content": 5}, {"role": ['"0" is not a valid choice.'], "content": ["Must be a string."]}),
        ({"content": "x"}, {"role": ["This field is required."]}),
        ({"role": "user", "content": None}, {"content": ["This field may not be null."]}),
        ({"role": "user", "content": "x\x00"}, {"content": ["Null characters are not allowed."]}),
        ({"role": "user", "content": "x" * 101}, {"content": ["At most 100 characters (got 101)."]}),
        (
            {"messages": [{"role": "user", "content": "ok"}, {"role": "bot", "content": " "}]},
            {"messages[1].role": ['"bot" is not a valid choice.'], "messages[1].content": ["Must be non-empty text."]},
        ),
        (
            [{"role": "user", "content": "ok"}],
            None,
        ),
        (
            [{"role": "user"}, 7, {"role": "x", "content": "y"}],
            {
                "messages[0].content": ["This field is required."],
                "messages[1]": ["Must be an object with role and content."],
                "messages[2].role": ['"x" is not a valid choice.'],
            },
        ),
        (
            [{"role": "user", "content": "ok"}] * 1001,
            {"messages": ["At most 1000 messages per request."]},
        ),
    ],
)
def test_an_append_is_refused_with_the_messages_of_before(auth_client, user, settings, body, fields):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"max_message_chars": 100})}
    )
    context = context_create(owner=user)

    response = auth_client.post(f"/api/context/{context.id}/messages", body, format="json")

    if fields is None:
        assert response.status_code == 201
        return
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == {
        "code": "VALIDATION_ERROR",
        "message": f"Invalid value for: {', '.join(fields)}.",
        "details": {"fields": fields},
    }
    assert ContextMessage.objects.count() == 0


@pytest.mark.parametrize("body", [{"role": "bot", "content": ""}, "text", [{"role": "user", "content": "ok"}, 1]])
def test_an_unknown_context_is_a_404_whatever_the_body(auth_client, body):
    response = auth_client.post("/api/context/6f1b0b5e-8a55-4a53-9d6e-1a1d0d7a5a01/messages", body, format="json")

    assert response.status_code == 404
