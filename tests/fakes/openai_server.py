"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, for provider tests.

    with FakeOpenAIServer() as server:
        server.reply("Hello")                          # next answer (FIFO); without one it echoes the last message
        server.fail(503, {"error": {"message": "busy"}})  # next answer is an HTTP error
        server.delay(2.0)                              # the next answer is sent after 2 s (timeouts)
        server.slow(10.0)                              # every answer without a plan is sent after 10 s
        server.reply_raw(RawAnswer(b"<html>…", content_type="text/html"))  # next answer sent as these bytes
        ... base_url=server.base_url ...
        server.requests                                # every JSON body received, in order, with its headers

A request with ``"stream": true`` is answered as the API streams: Server-Sent Events, one ``chat.completion.chunk``
per word of the answer (``server.pace(0.2)`` waits that long before each), a last chunk with ``finish_reason``,
one with the usage when ``stream_options.include_usage`` asks for it, then ``data: [DONE]``.
``server.reply("Hello there", cut_after=1)`` sends one word and closes the connection, with no ``finish_reason``.

Other routes (``/v1/images/generations``) can be added with ``server.route(path, handler)``, where
``handler(body) -> (status, json_body)``; a handler may answer a ``RawAnswer`` instead of a JSON body: bytes as
they are (an HTML page, JSON cut short, a Content-Length that promises more than is sent), or chunks streamed with
no length at all. ``server.bytes_sent`` counts the answer bytes really written to clients.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RawAnswer:
    """An answer written as it is. ``body`` bytes are sent with ``Content-Length: declared_length`` (their own
    length by default); an iterable of chunks is streamed with no length, the connection closed at its end."""

    body: bytes | Iterable[bytes]
    content_type: str = "application/json"
    declared_length: int | None = None


Handler = Callable[[dict[str, Any]], tuple[int, "dict[str, Any] | RawAnswer"]]


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]


@dataclass
class _Planned:
    status: int = 200
    body: dict[str, Any] | None = None
    content: str | None = None
    raw: RawAnswer | None = None
    delay: float = 0.0
    cut_after: int | None = None


@dataclass
class FakeOpenAIServer:
    model: str = "fake-model"
    requests: list[ReceivedRequest] = field(default_factory=list)
    bytes_sent: int = 0

    def __post_init__(self) -> None:
        self._planned: deque[_Planned] = deque()
        self._routes: dict[str, Handler] = {"/v1/chat/completions": self._chat_completions}
        self._lock = threading.Lock()
        self._default_delay = 0.0
        self._pace = 0.0
        fake = self

        class RequestHandler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                body = json.loads(raw or b"{}")
                with fake._lock:
                    fake.requests.append(
                        ReceivedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                handler = fake._routes.get(self.path)
                status, answer = (
                    (404, {"error": {"message": f"no route {self.path}"}}) if handler is None else (handler(body))
                )
                try:
                    if isinstance(answer, RawAnswer):
                        self._send_raw(status, answer)
                    else:
                        payload = json.dumps(answer).encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self._write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout or a size limit): nothing more to answer

            def _send_raw(self, status: int, answer: RawAnswer) -> None:
                self.send_response(status)
                self.send_header("Content-Type", answer.content_type)
                if isinstance(answer.body, bytes):
                    declared = len(answer.body) if answer.declared_length is None else answer.declared_length
                    self.send_header("Content-Length", str(declared))
                    self.end_headers()
                    self._write(answer.body)
                    return
                # No length: the body ends when the connection closes (HTTP/1.0, as this server speaks).
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in answer.body:
                    self._write(chunk)

            def _write(self, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                with fake._lock:
                    fake.bytes_sent += len(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def route(self, path: str, handler: Handler) -> None:
        self._routes[path] = handler

    def reply(self, content: str, *, delay: float = 0.0, cut_after: int | None = None) -> None:
        self._planned.append(_Planned(content=content, delay=delay, cut_after=cut_after))

    def pace(self, seconds: float) -> None:
        """A streamed answer waits ``seconds`` before each of its chunks."""
        self._pace = seconds

    def reply_raw(self, answer: RawAnswer, *, status: int = 200) -> None:
        self._planned.append(_Planned(status=status, raw=answer))

    def fail(self, status: int, body: dict[str, Any] | None = None, *, delay: float = 0.0) -> None:
        self._planned.append(_Planned(status=status, body=body or {"error": {"message": "failure"}}, delay=delay))

    def delay(self, seconds: float) -> None:
        self._planned.append(_Planned(delay=seconds))

    def slow(self, seconds: float) -> None:
        """Every answer that has no plan of its own (the echo) is sent after ``seconds``: a slow LLM."""
        self._default_delay = seconds

    def _chat_completions(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | RawAnswer]:
        with self._lock:
            planned = self._planned.popleft() if self._planned else _Planned(delay=self._default_delay)
        if planned.delay:
            time.sleep(planned.delay)
        if planned.raw is not None:
            return planned.status, planned.raw
        if planned.status != 200:
            return planned.status, planned.body or {}
        messages = body.get("messages") or [{"content": ""}]
        content = planned.content if planned.content is not None else f"echo: {messages[-1].get('content', '')}"
        prompt_tokens = sum(len(str(message.get("content", "")).split()) for message in messages)
        completion_tokens = len(content.split())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self._stream(body.get("model") or self.model, content, usage if include_usage else None, planned)
            return 200, RawAnswer(chunks, content_type="text/event-stream")
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        }

    def _stream(self, model: str, content: str, usage: dict[str, int] | None, planned: _Planned) -> Iterator[bytes]:
        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 0, "model": model}
            return b"data: " + json.dumps({**chunk, "choices": choices, **extra}).encode() + b"\n\n"

        pieces = re.findall(r"\s*\S+", content) or [content]
        for number, piece in enumerate(pieces):
            if planned.cut_after is not None and number >= planned.cut_after:
                return  # the connection closes: no finish_reason, no [DONE]
            time.sleep(self._pace)
            delta = {"role": "assistant", "content": piece} if number == 0 else {"content": piece}
            yield event([{"index": 0, "delta": delta, "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if usage is not None:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"
