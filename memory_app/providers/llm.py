"""The LLM provider, behind one module: an OpenAI-compatible client and an offline default.

``llm_provider()`` returns the one configured in ``settings.MEMORY.providers.llm`` (``LLM_PROVIDER``,
``LLM_BASE_URL``, ``LLM_API_KEY``, ``LLM_MODEL`` override it):

- ``offline`` (default) — ``OfflineLLM``, a retrieval-based extractive responder with no network
  (``offline_reply``, whose comment states the algorithm): it ranks the sentences of the earlier
  messages of the window against the prompt with BM25 over jieba words, and answers with the best ones under a
  header that says where they came from ("You said: …", "I said: …"); a greeting gets a greeting, a question or
  statement nothing relates to gets a fixed answer. So the reply really depends on the window: drop the message
  that held the answer and the answer changes. ``summarize`` is extractive too: sentences scored by the average
  corpus frequency of their words, the best kept in order within the budget.
- ``openai`` — ``OpenAICompatibleLLM``, the ``openai`` package pointed at any chat-completions API (OpenAI,
  DeepSeek, Doubao, Qwen, vLLM, Ollama) with an explicit timeout and ``max_retries=0``: retrying is the
  caller's decision (the workflow engine retries ``RetryableProviderError`` with backoff).

Failures raise ``ProviderError`` (502 ``PROVIDER_ERROR``); timeouts, connection errors, HTTP 429 and 5xx, and an
answer cut short or not JSON (an HTML page from a proxy) raise its subclass ``RetryableProviderError``
(``retryable = True``). An answer over ``max_answer_bytes`` is refused while it is read. NUL characters and lone
surrogates in a reply are dropped / replaced by U+FFFD, so the reply can be stored.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.providers.openai_client import openai_client, openai_json_answer, provider_errors, too_large
from memory_app.text import text_storable
from memory_app.tokens import count_tokens

SUMMARY_PREFIX = "Summary of earlier conversation: "
# The first line of the system message that carries a generation's recalled archived messages, one per line
# after it as "- <role>: <content>" (``memory_app.services.conversation.recall``).
RECALL_PREFIX = "Earlier in this conversation (recalled):"
_RECALLED_LINE = re.compile(r"^- (?:user|assistant|system): ")
# Sentence ends: the CJK full stop, full-width ! ? ; (written as escapes), the ellipsis, and ASCII ones.
_SENTENCE_END = re.compile(r"(?<=[\u3002\uff01\uff1f\uff1b!?;\u2026])|(?<=\.)(?=\s)|\n+")
_WORD_CHAR = re.compile(r"\w", re.UNICODE)
_STOPWORD_TEXT = (
    "a an the is are was were be been am i you he she it we they me my your his her its our their this that "
    "these those what which who whom how why when where do does did of in on at to for with from by and or but "
    "not no so as if then than there here can could would should will shall may might must have has had about "
    "into 的 了 是 在 和 与 及 也 就 都 而 着 或 一个 我 你 他 她 它 我们 你们 他们 吗 呢 吧 啊 什么 怎么 "
    "哪 谁 这 那 这个 那个 有 没有 请 把 被 给 让 对"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class ChatResult:
    content: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    provider: str

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LLMProvider(Protocol):
    name: str

    def chat(
        self,
        *,
        messages: Sequence[ChatMessage],
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_object: bool = False,
    ) -> ChatResult:
        """``json_object``: the answer must be one JSON object; a provider that can say so to the model does."""
        ...

    def chat_stream(
        self, *, messages: Sequence[ChatMessage], temperature: float | None = None, max_tokens: int | None = None
    ) -> Iterator[str | ChatResult]:
        """The reply as it is produced: pieces of text (``str``) in order, then one ``ChatResult`` holding their
        concatenation and the usage. Failures raise ``ProviderError`` while iterating, possibly after pieces."""
        ...

    def summarize(self, *, previous_summary: str | None, messages: Sequence[ChatMessage], max_tokens: int) -> str:
        """One summary of ``previous_summary`` followed by ``messages``, at most ``max_tokens`` (our counter)."""
        ...


def split_sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (jieba segmentation), without punctuation and stopwords."""
    import jieba

    return [
        word
        for word in (token.strip().lower() for token in jieba.lcut(text))
        if word and _WORD_CHAR.search(word) and word not in _STOPWORDS
    ]


def fit_to_budget(text: str, max_tokens: int) -> str:
    """``text`` cut at the end, if it must be, so that our counter gives at most ``max_tokens``."""
    if count_tokens(text) <= max_tokens:
        return text
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits
        middle = (low + high + 1) // 2
        if count_tokens(text[:middle]) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low]


# --- the offline responder ------------------------------------------------------------------------------------
# Retrieval-based extractive answering over the window, deterministic for the same input:
# 1. The prompt is the last user message. Every other message is a source, except the responder's own earlier
#    answers (they only quote sources, which are still there, or say that nothing was found).
# 2. Each source is split into sentences; the sentences and the prompt are segmented into words by jieba (Chinese
#    words, and English words as they are), lower-cased, without punctuation and stopwords.
# 3. Each sentence is scored against the prompt's distinct words with Okapi BM25 (k1 = 1.2, b = 0.75), the
#    sentences of the window being the collection: a word that few sentences hold weighs more, a long sentence
#    is not favoured for its length.
# 4. The answer is the best ``ANSWER_SENTENCES`` sentences that score at least ``RELATIVE_CUTOFF`` of the best
#    (so a sentence that shares one common word with the prompt does not ride along with a real match), in
#    conversation order, each under who said it: "From earlier in this conversation:" then "- You said: …",
#    "- I said: …", "- Instructions: …", "- Summary: …", "- Recalled: …" (a message of the ``RECALL_PREFIX``
#    block: archived messages a generation recalled) (in Chinese when the prompt is Chinese).
# 5. Nothing scores: a greeting gets a greeting; any other prompt gets "Nothing earlier in this conversation
#    relates to: <prompt>".
# 6. ``max_tokens``: whole lines are added while the reply fits; if not even the first fits, it is cut.
BM25_K1 = 1.2
BM25_B = 0.75
ANSWER_SENTENCES = 3
RELATIVE_CUTOFF = 0.5
NOTHING_RELEVANT = "Nothing earlier in this conversation relates to: "
NOTHING_RELEVANT_ZH = "本次对话中之前没有与此相关的内容\uff1a"  # full-width punctuation written as escapes
FROM_EARLIER = "From earlier in this conversation:"
FROM_EARLIER_ZH = "根据本次对话中之前的内容\uff1a"
GREETING = "Hello! I answer from what this conversation already holds: tell me about your comic, or ask about it."
GREETING_ZH = "你好\uff01我根据本次对话中已有的内容回答\uff1a请介绍你的漫画\uff0c或者就它提问。"
# Each reply of the responder starts with one of these: such a message is never a source.
OWN_OPENERS = (NOTHING_RELEVANT, NOTHING_RELEVANT_ZH, FROM_EARLIER, FROM_EARLIER_ZH, GREETING, GREETING_ZH)
_SOURCE_LABELS = {
    "user": ("You said", "你说过"),
    "assistant": ("I said", "我说过"),
    "system": ("Instructions", "设定"),
    "summary": ("Summary", "摘要"),
    "recalled": ("Recalled", "之前提到过"),
}
_GREETING_TEXT = (
    "hello hi hey hiya greetings morning afternoon evening good 你好 您好 嗨 哈喽 早上好 下午好 晚上好 早安 晚安 "
    "大家好 你们好"
)
_GREETING_WORDS = frozenset(_GREETING_TEXT.split())
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class _Sentence:
    order: int
    message: int
    source: str
    text: str
    words: tuple[str, ...]


def _bm25(query: set[str], sentences: Sequence[_Sentence]) -> list[float]:
    """Okapi BM25 of each sentence for the query's words, the sentences being the collection."""
    if not sentences:
        return []
    average_length = sum(len(sentence.words) for sentence in sentences) / len(sentences) or 1.0
    holding = Counter(word for sentence in sentences for word in set(sentence.words) if word in query)
    weights = {word: math.log(1 + (len(sentences) - count + 0.5) / (count + 0.5)) for word, count in holding.items()}
    scores = []
    for sentence in sentences:
        frequencies = Counter(word for word in sentence.words if word in weights)
        length_norm = BM25_K1 * (1 - BM25_B + BM25_B * len(sentence.words) / average_length)
        scores.append(
            sum(weights[word] * count * (BM25_K1 + 1) / (count + length_norm) for word, count in frequencies.items())
        )
    return scores


def _sources(messages: Sequence[ChatMessage], prompt_index: int) -> list[_Sentence]:
    sentences: list[_Sentence] = []
    for index, message in enumerate(messages):
        if index == prompt_index or (message.role == "assistant" and message.content.startswith(OWN_OPENERS)):
            continue
        content, source = message.content, message.role
        if content.startswith(SUMMARY_PREFIX):
            content, source = content.removeprefix(SUMMARY_PREFIX), "summary"
        elif message.role == "system" and content.startswith(RECALL_PREFIX):
            lines = content.removeprefix(RECALL_PREFIX).splitlines()
            content, source = "\n".join(_RECALLED_LINE.sub("", line) for line in lines), "recalled"
        for text in split_sentences(content):
            sentences.append(_Sentence(len(sentences), index, source, text, tuple(content_words(text))))
    return sentences


def offline_reply(messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> str:
    """The offline responder's answer to the last user message of ``messages`` (see the comment above)."""
    prompt_index = max((i for i, m in enumerate(messages) if m.role == "user"), default=len(messages) - 1)
    prompt = messages[prompt_index].content.strip() if messages else ""
    chinese = bool(_CJK.search(prompt))
    query = set(content_words(prompt))
    sentences = _sources(messages, prompt_index)
    scores = _bm25(query, sentences)
    best = max(scores, default=0.0)
    ranked = sorted(
        (i for i, score in enumerate(scores) if score > 0 and score >= RELATIVE_CUTOFF * best),
        key=lambda i: (-scores[i], -i),  # the most recent sentence wins a tie
    )[:ANSWER_SENTENCES]
    if ranked:
        lines = [FROM_EARLIER_ZH if chinese else FROM_EARLIER]
        for i in sorted(ranked):
            label = _SOURCE_LABELS.get(sentences[i].source, (sentences[i].source, sentences[i].source))
            lines.append(f"- {label[1]}\uff1a{sentences[i].text}" if chinese else f"- {label[0]}: {sentences[i].text}")
        return _fit_lines(lines, max_tokens)
    if query and query <= _GREETING_WORDS:
        reply = GREETING_ZH if chinese else GREETING
    else:
        reply = (NOTHING_RELEVANT_ZH if chinese else NOTHING_RELEVANT) + prompt
    return reply if max_tokens is None else fit_to_budget(reply, max_tokens)


def _fit_lines(lines: list[str], max_tokens: int | None) -> str:
    """The header and as many whole lines as fit ``max_tokens``; the header and first line cut if none does."""
    if max_tokens is None:
        return "\n".join(lines)
    kept = lines[:2]
    for line in lines[2:]:
        if count_tokens("\n".join([*kept, line])) > max_tokens:
            break
        kept.append(line)
    return fit_to_budget("\n".join(kept), max_tokens)


class OfflineLLM:
    """Extractive responder and summarizer; see the module docstring."""

    name = "offline"
    model = "offline-extractive"

    def chat(
        self,
        *,
        messages: Sequence[ChatMessage],
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_object: bool = False,
    ) -> ChatResult:
        reply = offline_reply(messages, max_tokens=max_tokens)
        return ChatResult(
            content=reply,
            prompt_tokens=sum(count_tokens(message.content) for message in messages),
            completion_tokens=count_tokens(reply),
            model=self.model,
            provider=self.name,
        )

    def chat_stream(
        self, *, messages: Sequence[ChatMessage], temperature: float | None = None, max_tokens: int | None = None
    ) -> Iterator[str | ChatResult]:
        """The same reply as ``chat``, word by word (jieba's segmentation, spaces and punctuation included, so the
        pieces join into the reply exactly)."""
        import jieba

        result = self.chat(messages=messages, temperature=temperature, max_tokens=max_tokens)
        yield from (word for word in jieba.lcut(result.content) if word)
        yield result

    def summarize(self, *, previous_summary: str | None, messages: Sequence[ChatMessage], max_tokens: int) -> str:
        sentences: list[str] = []
        if previous_summary:
            sentences.extend(split_sentences(previous_summary.removeprefix(SUMMARY_PREFIX)))
        for message in messages:
            sentences.extend(f"{message.role}: {sentence}" for sentence in split_sentences(message.content))
        words = [content_words(sentence) for sentence in sentences]
        frequency = Counter(word for sentence_words in words for word in sentence_words)
        scores = [
            sum(frequency[word] for word in sentence_words) / len(sentence_words) if sentence_words else 0.0
            for sentence_words in words
        ]
        budget = max_tokens - count_tokens(SUMMARY_PREFIX)
        chosen: set[int] = set()
        used = 0
        for index in sorted(range(len(sentences)), key=lambda i: (-scores[i], -i)):
            cost = count_tokens(sentences[index])
            if used + cost <= budget:
                chosen.add(index)
                used += cost
        if not chosen and sentences:
            # Not one whole sentence fits: keep the beginning of the best one rather than nothing.
            best = min(range(len(sentences)), key=lambda i: (-scores[i], -i))
            return fit_to_budget(SUMMARY_PREFIX + sentences[best], max_tokens)
        return fit_to_budget(SUMMARY_PREFIX + " ".join(sentences[i] for i in sorted(chosen)), max_tokens)


class OpenAICompatibleLLM:
    """Any OpenAI-compatible chat-completions API, with an explicit timeout on every call and no hidden retries."""

    name = "openai"

    def __init__(self, config: ProviderConfig) -> None:
        if not config.model:
            raise ProviderError(
                "No LLM model is configured (memory.providers.llm.model or LLM_MODEL).",
                details={"provider": self.name},
            )
        if not config.base_url:
            # Never the client library's default (the public OpenAI endpoint): see providers.settings_check.
            raise ProviderError(
                "No LLM base URL is configured (memory.providers.llm.base_url or LLM_BASE_URL, including /v1).",
                details={"provider": self.name},
            )
        self.model = config.model
        self.max_answer_bytes = config.max_answer_bytes
        self.json_mode = config.json_mode
        # Local servers (vLLM, Ollama) need no key, but the client insists on one.
        self._client = openai_client(
            base_url=config.base_url, api_key=config.api_key or "not-needed", timeout_seconds=config.timeout_seconds
        )

    def chat(
        self,
        *,
        messages: Sequence[ChatMessage],
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_object: bool = False,
    ) -> ChatResult:
        arguments = self._arguments(messages, temperature, max_tokens)
        if json_object and self.json_mode:
            # OpenAI's JSON mode (DeepSeek, Qwen, vLLM and Ollama accept it too); off by config for servers that
            # refuse the parameter, in which case the prompt alone asks for JSON.
            arguments["response_format"] = {"type": "json_object"}
        details = {"provider": self.name, "model": self.model}
        completion = openai_json_answer(
            send=lambda: self._client.chat.completions.with_streaming_response.create(**arguments),
            label="LLM",
            details=details,
            max_bytes=self.max_answer_bytes,
        )
        choices = completion.get("choices")
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = first.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise ProviderError("The LLM provider returned no message.", details=details)
        # A NUL (which PostgreSQL cannot store) or a lone surrogate (which UTF-8 cannot encode) in an otherwise good
        # answer: dropped and replaced by U+FFFD, so the reply is kept and can be stored and sent.
        content = text_storable(content)
        usage = completion.get("usage")
        prompt_tokens = _count(usage, "prompt_tokens")
        completion_tokens = _count(usage, "completion_tokens")
        model = completion.get("model")
        return ChatResult(
            content=content,
            prompt_tokens=prompt_tokens
            if prompt_tokens is not None
            else sum(count_tokens(message.content) for message in messages),
            completion_tokens=completion_tokens if completion_tokens is not None else count_tokens(content),
            model=text_storable(model) if isinstance(model, str) and model else self.model,
            provider=self.name,
        )

    def _arguments(
        self, messages: Sequence[ChatMessage], temperature: float | None, max_tokens: int | None
    ) -> dict[str, object]:
        arguments: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": message.role, "content": message.content} for message in messages],
        }
        if temperature is not None:
            arguments["temperature"] = temperature
        if max_tokens is not None:
            arguments["max_tokens"] = max_tokens
        return arguments

    def chat_stream(
        self, *, messages: Sequence[ChatMessage], temperature: float | None = None, max_tokens: int | None = None
    ) -> Iterator[str | ChatResult]:
        """``stream=True`` with ``stream_options.include_usage`` (OpenAI, DeepSeek, vLLM, Ollama send the usage in
        a last chunk; without one our counter gives it). The answer is over when a choice has a
        ``finish_reason``: a stream that ends before is cut short (``RetryableProviderError``)."""
        arguments = self._arguments(messages, temperature, max_tokens)
        details = {"provider": self.name, "model": self.model}
        pieces: list[str] = []
        size, finished, usage, model = 0, False, None, None
        with provider_errors("LLM", details):
            stream = self._client.chat.completions.create(
                **arguments, stream=True, stream_options={"include_usage": True}
            )
            with stream:
                for chunk in stream:
                    data = chunk.to_dict()
                    usage = data.get("usage") or usage
                    model = data.get("model") or model
                    choices = data.get("choices")
                    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
                    delta = first.get("delta")
                    piece = delta.get("content") if isinstance(delta, dict) else None
                    finished = finished or bool(first.get("finish_reason"))
                    if isinstance(piece, str) and piece:
                        piece = text_storable(piece)
                        size += len(piece.encode())
                        if size > self.max_answer_bytes:
                            raise too_large("LLM", details, self.max_answer_bytes)
                        pieces.append(piece)
                        yield piece
        if not finished:
            raise RetryableProviderError("The LLM provider's answer was cut short.", details=details)
        content = "".join(pieces)
        prompt_tokens, completion_tokens = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        yield ChatResult(
            content=content,
            prompt_tokens=prompt_tokens
            if prompt_tokens is not None
            else sum(count_tokens(message.content) for message in messages),
            completion_tokens=completion_tokens if completion_tokens is not None else count_tokens(content),
            model=text_storable(model) if isinstance(model, str) and model else self.model,
            provider=self.name,
        )

    def summarize(self, *, previous_summary: str | None, messages: Sequence[ChatMessage], max_tokens: int) -> str:
        transcript = "\n".join(f"{message.role}: {message.content}" for message in messages)
        if previous_summary:
            transcript = f"{previous_summary}\n{transcript}"
        instruction = ChatMessage(
            role="system",
            content=(
                "Summarise the conversation below for a comic-creation assistant. Keep names, facts and decisions. "
                f"Answer with the summary only, in at most {max_tokens} tokens."
            ),
        )
        result = self.chat(messages=[instruction, ChatMessage(role="user", content=transcript)], max_tokens=max_tokens)
        # The provider's tokens are not ours: enforce the budget with our own counter.
        return fit_to_budget(SUMMARY_PREFIX + result.content.strip(), max_tokens)


def _count(usage: object, name: str) -> int | None:
    """A token count of the answer's ``usage``, if it is there and is a count."""
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def llm_provider(config: ProviderConfig | None = None) -> LLMProvider:
    """The configured LLM provider (``settings.MEMORY.providers.llm`` unless ``config`` is given)."""
    config = config or settings.MEMORY.providers.llm
    if config.provider == "openai":
        return OpenAICompatibleLLM(config)
    return OfflineLLM()
