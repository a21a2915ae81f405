"""The streamed answer of generate-with-context (``"stream": true``): Server-Sent Events over one response.

Events, each ``event: <name>`` and one ``data:`` line of JSON:

- ``delta`` ``{"content": "..."}``: the next piece of the reply, in order; the pieces join into the reply.
- ``done``: the stored reply, as the non-streamed answer's ``data`` (context id, message, the prompt's and the
  reply's positions, usage, provider, model, replayed, context). Last event.
- ``error`` ``{"status", "code", "message", "details"}``: the provider failed after the stream began (the
  envelope's error body and the HTTP status the call would have had). Last event; the prompt stays unanswered.

The same response object serves WSGI (a synchronous iterator) and ASGI (an asynchronous one, each step run in
the request's thread by ``sync_to_async``, so Django does not read the whole stream before sending it). Either
way the server closes the response at its end or when the client goes away, which closes the ``ReplyStream``:
the answer is then finished and stored (see ``memory_app.services.conversation.stream``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from rest_framework.request import Request

from memory_app.api.envelope import describe_exception
from memory_app.services.conversation import Generation, ReplyDelta, ReplyDone, ReplyStream

EVENT_STREAM = "text/event-stream"


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": [name]},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
        },
    }


# What each event of the stream is (OpenAPI 3.0/3.1 describe an event stream's events with ``schema``).
EVENT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _event(
            "delta",
            {"type": "object", "required": ["content"], "properties": {"content": {"type": "string"}}},
        ),
        _event("done", {"$ref": "#/components/schemas/GenerateResponse"}),
        _event(
            "error",
            {
                "type": "object",
                "required": ["status", "code", "message", "details"],
                "properties": {
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            },
        ),
    ]
}


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    # One line of JSON (json.dumps escapes newlines), so one ``data:`` field.
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class _SyncEvents:
    """The events as bytes, with ``close`` for the server (Django registers it with the response)."""

    def __init__(self, events: Iterator[bytes], stream: ReplyStream) -> None:
        self._events = events
        self.close = stream.close

    def __iter__(self) -> Iterator[bytes]:
        return self._events


class _AsyncEvents:
    def __init__(self, events: Iterator[bytes], stream: ReplyStream) -> None:
        self._events = events
        self.close = stream.close

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._generate()

    async def _generate(self) -> AsyncIterator[bytes]:
        step = sync_to_async(_next_event, thread_sensitive=True)
        while (event := await step(self._events)) is not None:
            yield event


def _next_event(events: Iterator[bytes]) -> bytes | None:
    return next(events, None)


def reply_stream_response(
    request: Request, stream: ReplyStream, done_payload: Callable[[Generation], dict[str, Any]]
) -> StreamingHttpResponse:
    def events() -> Iterator[bytes]:
        for event in stream:
            if isinstance(event, ReplyDelta):
                yield sse_event("delta", {"content": event.content})
            elif isinstance(event, ReplyDone):
                yield sse_event("done", done_payload(event.generation))
            else:
                status, body, _ = describe_exception(event.error, request)
                yield sse_event("error", {"status": status, **body})

    content: _SyncEvents | _AsyncEvents
    if isinstance(request._request, ASGIRequest):
        content = _AsyncEvents(events(), stream)
    else:
        content = _SyncEvents(events(), stream)
    response = StreamingHttpResponse(content, content_type=f"{EVENT_STREAM}; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx and the like pass each event on at once
    return response
