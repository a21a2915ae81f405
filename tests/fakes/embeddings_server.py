"""A real HTTP server on 127.0.0.1 that speaks the OpenAI embeddings protocol (``POST /v1/embeddings``), for
recall's tests. A test double only: its vectors come from ``local_embedding`` (hashed character n-grams), which
ranks by shared characters and is never the product's embedding.

    with FakeEmbeddingsServer() as server:
        ... EMBEDDINGS_BASE_URL=server.base_url ...
        server.vectors["小明的剑"] = [1.0, 0.0, ...]  # a hand-made vector for this exact text
        server.fail(500) / server.delay(2.0) / server.reply_raw(RawAnswer(b"<html>"))  # the next answer, as in
                                                                                     # FakeOpenAIServer
        server.embedded                                 # every text it was asked to embed, in order
        server.embedding_requests                       # the JSON bodies of /v1/embeddings, in order

It is a ``FakeOpenAIServer`` (chat completions still answer), sharing its plan of next answers.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.openai_server import FakeOpenAIServer, RawAnswer, _Planned

DEFAULT_DIMENSIONS = 64


def local_embedding(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A deterministic unit vector: each character 1-, 2- and 3-gram of the lower-cased text adds ±1 at a slot
    chosen by its sha256 (texts that share characters point the same way). Test double only."""
    vector = [0.0] * dimensions
    characters = [character for character in text.lower() if not character.isspace()]
    for size in (1, 2, 3):
        for start in range(len(characters) - size + 1):
            digest = hashlib.sha256("".join(characters[start : start + size]).encode()).digest()
            slot = int.from_bytes(digest[:4], "little") % dimensions
            vector[slot] += (1.0 if digest[4] & 1 else -1.0) * size
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0:
        vector[0] = 1.0
        return vector
    return [value / norm for value in vector]


@dataclass
class FakeEmbeddingsServer(FakeOpenAIServer):
    dimensions: int = DEFAULT_DIMENSIONS
    vectors: dict[str, list[float]] = field(default_factory=dict)
    embedded: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.route("/v1/embeddings", self._embeddings)

    @property
    def embedding_requests(self) -> list[dict[str, Any]]:
        return [request.body for request in self.requests if request.path == "/v1/embeddings"]

    def _embeddings(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | RawAnswer]:
        with self._lock:
            planned = self._planned.popleft() if self._planned else _Planned(delay=self._default_delay)
        if planned.delay:
            time.sleep(planned.delay)
        if planned.raw is not None:
            return planned.status, planned.raw
        if planned.status != 200:
            return planned.status, planned.body or {}
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        with self._lock:
            self.embedded += texts
        dimensions = int(body.get("dimensions") or self.dimensions)
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": self.vectors.get(text) or local_embedding(text, dimensions),
            }
            for index, text in enumerate(texts)
        ]
        return 200, {
            "object": "list",
            "data": data,
            "model": body.get("model") or self.model,
            "usage": {"prompt_tokens": sum(len(text) for text in texts), "total_tokens": sum(map(len, texts))},
        }
