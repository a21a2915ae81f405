"""The embeddings client: any OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, DeepSeek-compatible
gateways, Qwen/DashScope, a local vLLM, Ollama or text-embeddings-inference), configured by
``memory.search.embeddings`` (``EMBEDDINGS_BASE_URL``, ``EMBEDDINGS_API_KEY``, ``EMBEDDINGS_MODEL``).

There is no offline default: without a base URL and a model nothing is embedded and recall is lexical only (a
made-up local embedding would rank worse than the words themselves).

Vectors come back as unit-length float32 arrays (cosine similarity is then a dot product). Errors follow the chat
provider's conventions (``memory_app.providers.openai_client``): ``RetryableProviderError`` for timeouts,
connection errors, 429, 5xx and answers cut short; ``ProviderError`` for other statuses and answers that are not
what the protocol says (a wrong count of vectors, vectors of different sizes, values that are not finite numbers).
The key never appears in an error: details name the provider and the model only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings

from memory_app.errors import ProviderError
from memory_app.providers.openai_client import openai_client, openai_json_answer

if TYPE_CHECKING:
    from comicmem_site.memory_config import EmbeddingsConfig

LABEL = "embeddings"
# JSON floats as servers write them (``-0.012345678``, up to ~24 bytes with separators), per dimension; a model
# of unknown size is assumed to be at most this large.
_BYTES_PER_VALUE = 32
_MAX_UNKNOWN_DIMENSIONS = 4096


@dataclass(frozen=True)
class EmbeddingsEndpoint:
    """The configured endpoint, or None from ``embeddings_endpoint()`` when recall has no meaning side."""

    base_url: str
    api_key: str | None
    model: str
    dimensions: int | None
    timeout_seconds: float
    batch_size: int

    @property
    def model_key(self) -> str:
        """What stored vectors are keyed by with the text's hash: the model, and the size asked of it (a model
        asked for 256 dimensions gives other vectors than the same model at its full size)."""
        return self.model if self.dimensions is None else f"{self.model}@{self.dimensions}"

    @classmethod
    def from_config(cls, config: EmbeddingsConfig) -> EmbeddingsEndpoint | None:
        if not config.base_url or not config.model:
            return None
        return cls(
            base_url=config.base_url,
            api_key=config.api_key,
            model=config.model,
            dimensions=config.dimensions,
            timeout_seconds=config.timeout_seconds,
            batch_size=config.batch_size,
        )


def embeddings_endpoint() -> EmbeddingsEndpoint | None:
    """The endpoint of ``settings.MEMORY.search.embeddings``; None when no base URL or no model is set."""
    return EmbeddingsEndpoint.from_config(settings.MEMORY.search.embeddings)


def embed_texts(texts: Sequence[str], *, endpoint: EmbeddingsEndpoint) -> list[np.ndarray]:
    """One unit-length float32 vector per text, in order, asked ``endpoint.batch_size`` texts at a time."""
    vectors: list[np.ndarray] = []
    for start in range(0, len(texts), endpoint.batch_size):
        vectors += _embed_batch(list(texts[start : start + endpoint.batch_size]), endpoint=endpoint)
    return vectors


def _embed_batch(batch: list[str], *, endpoint: EmbeddingsEndpoint) -> list[np.ndarray]:
    # Local servers (vLLM, Ollama) need no key, but the client insists on one.
    client = openai_client(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key or "not-needed",
        timeout_seconds=endpoint.timeout_seconds,
    )
    arguments: dict[str, Any] = {
        "model": endpoint.model,
        "input": batch,
        # The client asks for base64 unless told otherwise and decodes it in a step the streamed form skips; plain
        # floats are what every compatible server speaks.
        "encoding_format": "float",
    }
    if endpoint.dimensions is not None:
        arguments["dimensions"] = endpoint.dimensions
    details = {"provider": LABEL, "model": endpoint.model, "inputs": len(batch)}
    answer = openai_json_answer(
        send=lambda: client.embeddings.with_streaming_response.create(**arguments),
        label=LABEL,
        details=details,
        max_bytes=len(batch) * (endpoint.dimensions or _MAX_UNKNOWN_DIMENSIONS) * _BYTES_PER_VALUE + 65536,
    )
    return _vectors(answer, count=len(batch), details=details)


def _vectors(answer: dict[str, Any], *, count: int, details: dict[str, Any]) -> list[np.ndarray]:
    """The answer's vectors in input order (``data[].index``), each normalized; anything else is refused."""
    data = answer.get("data")
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else "no"
        raise ProviderError(
            f"The {LABEL} provider answered {got} vectors for {count} inputs.", details={**details, "answer": "data"}
        )
    by_index: dict[int, list[Any]] = {}
    for position, item in enumerate(data):
        embedding = item.get("embedding") if isinstance(item, dict) else None
        index = item.get("index", position) if isinstance(item, dict) else None
        if not isinstance(embedding, list) or not embedding or not isinstance(index, int) or index in by_index:
            raise ProviderError(f"The {LABEL} provider's answer is malformed.", details={**details, "item": position})
        by_index[index] = embedding
    if sorted(by_index) != list(range(count)):
        raise ProviderError(f"The {LABEL} provider's answer is malformed.", details={**details, "answer": "index"})
    sizes = {len(embedding) for embedding in by_index.values()}
    if len(sizes) != 1:
        raise ProviderError(f"The {LABEL} provider answered vectors of different sizes.", details=details)
    vectors = []
    for index in range(count):
        values = by_index[index]
        if not all(isinstance(value, int | float) and not isinstance(value, bool) for value in values):
            raise ProviderError(f"The {LABEL} provider's answer holds values that are not numbers.", details=details)
        vector = np.asarray(values, dtype=np.float64)
        norm = float(np.linalg.norm(vector))
        if not math.isfinite(norm) or norm == 0.0:
            raise ProviderError(f"The {LABEL} provider answered a zero or non-finite vector.", details=details)
        vectors.append((vector / norm).astype(np.float32))
    return vectors
