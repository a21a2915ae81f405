"""Generate with context, streamed: the reply's pieces as the provider produces them, then the stored reply.

``context_generate_stream`` does what ``context_generate`` does before the provider call (validation, the
prompt stored once per request id, a replay of a stored reply) and returns a ``ReplyStream``: iterating it gives
``ReplyDelta`` events in order and then one ``ReplyDone`` (the reply stored, as ``context_generate`` stores it)
or one ``ReplyFailed`` (a provider failure: the prompt stays stored and ``unanswered``, nothing else is written).
A replay gives the whole stored reply as one delta, then its ``ReplyDone``.

The reply is stored once, when the provider's answer is complete, never in part. ``close()`` ends the stream:
if the consumer went away before the end (a client that disconnected), the provider's answer is still read to
its end and stored, so a retry with the same request id gets the whole reply and nothing acknowledged is lost;
then the ``call_on_close`` callbacks run (the web request's LLM slot is given back there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.models import ContextMessage, ConversationContext
from memory_app.providers.llm import ChatResult, llm_provider
from memory_app.services.conversation.generate import Generation, generation_prepare, generation_store
from memory_app.services.conversation.recall import Recalled


@dataclass(frozen=True)
class ReplyDelta:
    content: str


@dataclass(frozen=True)
class ReplyDone:
    generation: Generation


@dataclass(frozen=True)
class ReplyFailed:
    error: ProviderError


StreamEvent = ReplyDelta | ReplyDone | ReplyFailed


class ReplyStream:
    """One streamed generation; see the module docstring. Not thread-safe: one consumer, then ``close()``."""

    def __init__(
        self,
        *,
        context: ConversationContext,
        prompt_message: ContextMessage,
        request_id: str | None,
        chunks: Iterator[str | ChatResult] | None,
        replay: Generation | None,
        recalled: Recalled | None = None,
    ) -> None:
        self.context = context
        self.prompt_message = prompt_message
        self._request_id = request_id
        self._recalled = recalled
        self._chunks = chunks
        self._outcome: ReplyDone | ReplyFailed | None = ReplyDone(replay) if replay is not None else None
        self._first: str | None = replay.reply.content if replay is not None else None
        self._on_close: list[Callable[[], object]] = []
        self._closed = False

    @property
    def outcome(self) -> ReplyDone | ReplyFailed | None:
        """``None`` while the provider is still answering."""
        return self._outcome

    def call_on_close(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when the stream is closed (after the answer is stored)."""
        self._on_close.append(callback)

    def start(self) -> None:
        """Wait for the provider's first piece: a provider that fails before it answers anything raises here
        (``ProviderError``), before any event is sent, as ``context_generate`` would."""
        if self._first is None and self._outcome is None:
            self._first = self._pull()
        if isinstance(self._outcome, ReplyFailed) and self._first is None:
            raise self._outcome.error

    def __iter__(self) -> Iterator[StreamEvent]:
        self.start()
        if self._first:
            yield ReplyDelta(self._first)
        while (piece := self._pull()) is not None:
            yield ReplyDelta(piece)
        if self._outcome is not None:
            yield self._outcome

    def _pull(self) -> str | None:
        """The provider's next non-empty piece; ``None`` once the answer is complete (and stored) or has failed."""
        while self._outcome is None and self._chunks is not None:
            try:
                chunk = next(self._chunks)
            except ProviderError as error:
                self._outcome = ReplyFailed(error)
            except StopIteration:
                self._outcome = ReplyFailed(RetryableProviderError("The LLM provider's answer ended without a result."))
            else:
                if isinstance(chunk, ChatResult):
                    generation = generation_store(
                        context=self.context,
                        prompt_message=self.prompt_message,
                        result=chunk,
                        request_id=self._request_id,
                        recalled=self._recalled,
                    )
                    self._outcome = ReplyDone(generation)
                elif chunk:
                    return chunk
        return None

    def close(self) -> None:
        """Finish the answer and store it if the consumer stopped early, then run the ``call_on_close`` callbacks."""
        if self._closed:
            return
        self._closed = True
        try:
            while self._pull() is not None:
                pass
        finally:
            for callback in self._on_close:
                callback()


def context_generate_stream(
    *,
    context: ConversationContext,
    prompt: str,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    request_id: str | None = None,
    recall: object = None,
) -> ReplyStream:
    """``context_generate``, streamed (see the module docstring). Errors before the stream (bad input, a 409 for
    a request id used with another prompt) raise here; call ``start()`` to meet a failed provider call here too."""
    prepared = generation_prepare(context=context, prompt=prompt, system=system, request_id=request_id, recall=recall)
    chunks = None
    if prepared.replay is None:
        chunks = iter(
            llm_provider().chat_stream(messages=prepared.chat, temperature=temperature, max_tokens=max_tokens)
        )
    return ReplyStream(
        context=context,
        prompt_message=prepared.prompt_message,
        request_id=request_id,
        chunks=chunks,
        replay=prepared.replay,
        recalled=prepared.recalled,
    )
