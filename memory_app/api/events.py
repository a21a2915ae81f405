"""Server-Sent Events: ``GET /api/projects/{id}/events`` here, ``GET /api/workflows/{id}/events`` in ``workflows``.

The view itself is an ordinary DRF view (authentication, ownership, the 404 envelope before any byte of a
stream); what it returns is a ``StreamingHttpResponse`` over an *async* iterator. Under ASGI (uvicorn workers)
Django runs the view's checks in a thread and then serves the stream on the event loop: an open stream holds no
thread, only a coroutine (and, while it reads the table, a connection for the length of one query).

Protocol: every event is ``id: <row id>`` / ``event: <kind>`` / ``data: <JSON>``; ids only grow within a
stream, so ``Last-Event-ID`` (header, or ``?last_event_id=``) resumes exactly after the last event received.
A value that is not an event id restarts from the beginning, and the stream says so in a comment. Idle streams
get a ``: ping`` comment every ``events.heartbeat_seconds``. A run's stream ends after its terminal event
(completed, failed, cancelled), or at once when the run has ended and nothing is left to send.

Served by the WSGI app instead (no event loop), a stream sends the events committed so far and ends; the browser's
``EventSource`` reconnects after ``retry`` with its Last-Event-ID, so nothing is lost or repeated, only polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.views import APIView

from memory_app.api.history import AnyContentNegotiation
from memory_app.blob_storage import DEFAULT_STORAGE, blob_signed_url
from memory_app.models import PROJECT_ID_PATTERN, TERMINAL_EVENT_KINDS, Event, EventKind
from memory_app.selectors.events import EVENTS_BATCH, events_after, workflow_has_ended
from memory_app.selectors.projects import project_get

# What a stream listens to for wake-ups (memory_app.services.events publishes there; selectors and the API never
# import services, so the name is repeated, and a test holds both equal).
EVENTS_CHANNEL = "comicmem:events"
# How long a browser's EventSource waits before it reconnects after the stream ends or breaks.
RETRY_MILLISECONDS = 2000

LAST_EVENT_ID_PARAMETER = OpenApiParameter(
    "last_event_id",
    int,
    description="Resume after this event id (as the Last-Event-ID header, which wins when both are sent).",
)
# One Server-Sent Event of the stream (its "data" is the JSON described in docs/api.md, "Live events").
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One Server-Sent Event: id (the event's row id, monotonic), event (its kind), data (JSON).",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "enum": [kind.value for kind in EventKind]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}
EVENT_STREAM_RESPONSES = {(200, "text/event-stream"): EVENT_SCHEMA}


def last_event_id(request: Request) -> tuple[int, str | None]:
    """The id to resume after, and the raw value when it was not an event id (the stream then starts over)."""
    raw = request.META.get("HTTP_LAST_EVENT_ID") or request.query_params.get("last_event_id") or ""
    raw = raw.strip()
    if not raw:
        return 0, None
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw), None
    return 0, raw


def _frame(event: Event, absolute_url: Callable[[str], str] | None) -> bytes:
    data: dict[str, Any] = {
        "id": event.pk,
        "kind": event.kind,
        "created_at": event.created_at.isoformat(),
        **event.data,
    }
    panel = data.get("panel")
    if isinstance(panel, dict) and "blob" in panel:
        # Signed as it is sent (never stored), so a resumed stream hands out fresh URLs.
        panel = dict(panel)
        panel["url"] = blob_signed_url(name=panel.pop("blob"), alias=DEFAULT_STORAGE, absolute_url=absolute_url)
        data["panel"] = panel
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.pk}\nevent: {event.kind}\ndata: {body}\n\n".encode()


class _Waker:
    """Waits for "new events of this project may be committed": a Redis message on ``EVENTS_CHANNEL`` when
    ``REDIS_URL`` is set, else simply the poll interval (the embedded mode needs no server)."""

    def __init__(self, project_key: str) -> None:
        self.project_key = project_key
        self.pubsub: Any = None

    async def start(self) -> None:
        if not settings.REDIS_URL:
            return
        import redis.asyncio as aioredis

        try:
            client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
            self.pubsub = client.pubsub()
            await self.pubsub.subscribe(EVENTS_CHANNEL)
        except (RedisError, OSError):
            # Redis unreachable: this stream polls the table instead, as in the embedded mode.
            self.pubsub = None

    async def wait(self, seconds: float) -> None:
        poll = settings.MEMORY.events.poll_interval_seconds
        if self.pubsub is None:
            await asyncio.sleep(min(seconds, poll))
            return
        # With Redis the table is still read at least every heartbeat: a lost message costs one interval at most.
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                if message is not None and message.get("data") in (self.project_key, self.project_key.encode()):
                    return
        except (RedisError, OSError):
            await self.close()
            await asyncio.sleep(min(max(deadline - time.monotonic(), 0), poll))

    async def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            # Closing a broken subscription: nothing is left to do with its error.
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()


async def event_stream(
    *,
    project_key: str,
    workflow_key: Any | None,
    after_id: int,
    invalid_last_event_id: str | None,
    absolute_url: Callable[[str], str] | None,
) -> AsyncIterator[bytes]:
    config = settings.MEMORY.events
    read = sync_to_async(events_after)
    ended = sync_to_async(workflow_has_ended)
    for line in _preamble(invalid_last_event_id):
        yield line
    waker = _Waker(project_key)
    # Subscribed before the first read: a wake-up for a commit after that read is never missed.
    await waker.start()
    try:
        last_sent = time.monotonic()
        while True:
            # The run's status first, then its events: a run that has ended committed its last event with it.
            run_ended = workflow_key is not None and await ended(workflow_pk=workflow_key)
            events = await read(project_pk=project_key, workflow_pk=workflow_key, after_id=after_id)
            for event in events:
                yield _frame(event, absolute_url)
                after_id = event.pk
                last_sent = time.monotonic()
            if len(events) == EVENTS_BATCH:
                continue
            if workflow_key is not None and (
                (events and events[-1].kind in TERMINAL_EVENT_KINDS) or (run_ended and not events)
            ):
                return
            idle = time.monotonic() - last_sent
            if idle >= config.heartbeat_seconds:
                yield b": ping\n\n"
                last_sent = time.monotonic()
                continue
            await waker.wait(min(config.heartbeat_seconds - idle, max(config.heartbeat_seconds, 1.0)))
    finally:
        await waker.close()


def _preamble(invalid_last_event_id: str | None) -> list[bytes]:
    lines = [f"retry: {RETRY_MILLISECONDS}\n\n".encode()]
    if invalid_last_event_id is not None:
        # repr: whatever the client sent, the comment stays on one line.
        shown = repr(invalid_last_event_id[:64])
        lines.append(f": Last-Event-ID {shown} is not an event id: starting from the beginning\n\n".encode())
    return lines


def event_snapshot(
    *,
    project_key: str,
    workflow_key: Any | None,
    after_id: int,
    invalid_last_event_id: str | None,
    absolute_url: Callable[[str], str] | None,
) -> Iterator[bytes]:
    """The stream served without an event loop (the WSGI app): the events committed so far, then the end. An
    ``EventSource`` reconnects after ``retry`` with its Last-Event-ID, so it still receives every event once, by
    polling; no thread is held between two polls."""
    yield from _preamble(invalid_last_event_id)
    while True:
        events = events_after(project_pk=project_key, workflow_pk=workflow_key, after_id=after_id)
        for event in events:
            yield _frame(event, absolute_url)
            after_id = event.pk
        if len(events) < EVENTS_BATCH:
            return


def event_stream_response(
    request: Request, *, project_key: str, workflow_key: Any | None = None
) -> StreamingHttpResponse:
    after_id, invalid = last_event_id(request)
    arguments: dict[str, Any] = {
        "project_key": project_key,
        "workflow_key": workflow_key,
        "after_id": after_id,
        "invalid_last_event_id": invalid,
        "absolute_url": request.build_absolute_uri,
    }
    # Under ASGI the stream lives on the event loop; a WSGI server has none, and a stream there would hold a
    # thread for its whole life, so it gets what is committed and ends (the client polls by reconnecting).
    served_async = isinstance(request._request, ASGIRequest)
    response = StreamingHttpResponse(
        event_stream(**arguments) if served_async else event_snapshot(**arguments),
        content_type="text/event-stream; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    # nginx and similar proxies would otherwise buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response


class ProjectEventsView(APIView):
    """The live events of every run of the project (see docs/api.md, "Live events")."""

    content_negotiation_class = AnyContentNegotiation

    @extend_schema(
        tags=["projects"],
        parameters=[
            OpenApiParameter("project_id", str, OpenApiParameter.PATH, pattern=PROJECT_ID_PATTERN.pattern),
            LAST_EVENT_ID_PARAMETER,
        ],
        responses=EVENT_STREAM_RESPONSES,
    )
    def get(self, request: Request, project_id: str) -> StreamingHttpResponse:
        project = project_get(user=request.user, project_id=project_id)
        return event_stream_response(request, project_key=str(project.pk))
