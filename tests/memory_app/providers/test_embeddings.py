"""The embeddings client against a real local HTTP server speaking the OpenAI embeddings protocol."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from comicmem_site.memory_config import EmbeddingsConfig
from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.providers.embeddings import EmbeddingsEndpoint, embed_texts, embeddings_endpoint
from tests.fakes.embeddings_server import local_embedding
from tests.fakes.openai_server import RawAnswer


def endpoint_for(server, **values) -> EmbeddingsEndpoint:
    values = {"timeout_seconds": 1.0, **values}
    config = EmbeddingsConfig(base_url=server.base_url, api_key="sk-embed-secret", model="fake-embed", **values)
    endpoint = EmbeddingsEndpoint.from_config(config)
    assert endpoint is not None
    return endpoint


def test_unconfigured_means_no_endpoint(settings):
    assert settings.MEMORY.search.embeddings.base_url is None
    assert embeddings_endpoint() is None
    assert EmbeddingsEndpoint.from_config(EmbeddingsConfig(base_url="http://127.0.0.1:1/v1")) is None  # no model


def test_texts_are_sent_in_batches_and_come_back_in_order_unit_length(fake_embeddings):
    endpoint = endpoint_for(fake_embeddings, batch_size=2)
    texts = ["小明拔出宝剑", "小红在河边", "月亮", "dragon gate", "第五个"]

    vectors = embed_texts(texts, endpoint=endpoint)

    assert [body["input"] for body in fake_embeddings.embedding_requests] == [texts[0:2], texts[2:4], texts[4:5]]
    assert all(
        body["model"] == "fake-embed" and body["encoding_format"] == "float"
        for body in fake_embeddings.embedding_requests
    )
    assert all("dimensions" not in body for body in fake_embeddings.embedding_requests)
    assert [vector.dtype for vector in vectors] == [np.float32] * 5
    for text, vector in zip(texts, vectors, strict=True):
        assert np.allclose(vector, np.asarray(local_embedding(text), dtype=np.float32), atol=1e-6)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    headers = [request.headers for request in fake_embeddings.requests]
    assert all(header["authorization"] == "Bearer sk-embed-secret" for header in headers)


def test_dimensions_are_asked_and_key_the_vectors(fake_embeddings):
    endpoint = endpoint_for(fake_embeddings, dimensions=16)

    [vector] = embed_texts(["小明"], endpoint=endpoint)

    assert fake_embeddings.embedding_requests[0]["dimensions"] == 16
    assert vector.shape == (16,)
    assert endpoint.model_key == "fake-embed@16"
    assert endpoint_for(fake_embeddings).model_key == "fake-embed"


def test_a_vector_that_is_not_unit_length_is_normalized(fake_embeddings):
    fake_embeddings.vectors["长"] = [3.0, 4.0] + [0.0] * 62

    [vector] = embed_texts(["长"], endpoint=endpoint_for(fake_embeddings))

    assert vector[:2].tolist() == pytest.approx([0.6, 0.8])


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, RetryableProviderError), (503, RetryableProviderError), (429, RetryableProviderError), (400, ProviderError)],
)
def test_http_errors_map_to_provider_errors_without_the_key(fake_embeddings, status, error):
    fake_embeddings.fail(status, {"error": {"message": "no"}})

    with pytest.raises(error) as raised:
        embed_texts(["小明"], endpoint=endpoint_for(fake_embeddings))

    assert raised.value.details["status"] == status
    assert (type(raised.value) is RetryableProviderError) == (status != 400)
    assert "sk-embed-secret" not in raised.value.message + json.dumps(raised.value.details)


def test_a_slow_endpoint_times_out(fake_embeddings):
    fake_embeddings.delay(2.5)

    with pytest.raises(RetryableProviderError, match="timed out"):
        embed_texts(["小明"], endpoint=endpoint_for(fake_embeddings, timeout_seconds=0.3))


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (RawAnswer(b"<html>bad gateway</html>", content_type="text/html"), RetryableProviderError, "not JSON"),
        (RawAnswer(b'{"data": [{"embedding": [0.1, 0.2'), RetryableProviderError, "not JSON"),
        (RawAnswer(b'{"data": []}'), ProviderError, "0 vectors for 1 inputs"),
        (RawAnswer(b'{"object": "list"}'), ProviderError, "no vectors for 1 inputs"),
        (RawAnswer(b'{"data": [{"index": 0, "embedding": "abc"}]}'), ProviderError, "malformed"),
        (RawAnswer(b'{"data": [{"index": 0, "embedding": [0.1, "x"]}]}'), ProviderError, "not numbers"),
        (RawAnswer(b'{"data": [{"index": 0, "embedding": [0.0, 0.0]}]}'), ProviderError, "zero or non-finite"),
        (RawAnswer(b'{"data": [{"index": 3, "embedding": [0.1, 0.2]}]}'), ProviderError, "malformed"),
        (RawAnswer(b"[1, 2]"), ProviderError, "not a JSON object"),
    ],
)
def test_garbage_answers_are_refused(fake_embeddings, answer, error, match):
    fake_embeddings.reply_raw(answer)

    with pytest.raises(error, match=match):
        embed_texts(["小明"], endpoint=endpoint_for(fake_embeddings))


def test_vectors_of_different_sizes_are_refused(fake_embeddings):
    fake_embeddings.vectors["甲"] = [1.0, 0.0]
    fake_embeddings.vectors["乙"] = [1.0, 0.0, 0.0]

    with pytest.raises(ProviderError, match="different sizes"):
        embed_texts(["甲", "乙"], endpoint=endpoint_for(fake_embeddings))


def test_answers_out_of_order_are_put_back_in_input_order(fake_embeddings):
    body = {"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]}
    fake_embeddings.reply_raw(RawAnswer(json.dumps(body).encode()))

    first, second = embed_texts(["甲", "乙"], endpoint=endpoint_for(fake_embeddings))

    assert first.tolist() == [1.0, 0.0]
    assert second.tolist() == [0.0, 1.0]


def test_an_unreachable_endpoint_is_retryable():
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = EmbeddingsConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_seconds=0.5)

    with pytest.raises(RetryableProviderError, match="Could not reach"):
        embed_texts(["x"], endpoint=EmbeddingsEndpoint.from_config(config))  # type: ignore[arg-type]
