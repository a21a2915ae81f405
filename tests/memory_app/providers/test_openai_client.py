"""The OpenAI-compatible client shared by the chat and image providers: one per endpoint and process."""

from __future__ import annotations

from memory_app.providers.openai_client import openai_client, openai_client_warm_up


def transport_tls_context(client):
    return client._client._transport._pool._ssl_context


def test_one_client_per_endpoint_key_and_timeout():
    first = openai_client(base_url="http://127.0.0.1:9/v1", api_key="sk-a", timeout_seconds=5.0)

    assert openai_client(base_url="http://127.0.0.1:9/v1", api_key="sk-a", timeout_seconds=5.0) is first
    assert openai_client(base_url="http://127.0.0.1:9/v2", api_key="sk-a", timeout_seconds=5.0) is not first
    assert openai_client(base_url="http://127.0.0.1:9/v1", api_key="sk-b", timeout_seconds=5.0) is not first
    assert openai_client(base_url="http://127.0.0.1:9/v1", api_key="sk-a", timeout_seconds=6.0) is not first


def test_clients_share_one_tls_context_that_verifies_certificates():
    openai_client_warm_up()
    first = openai_client(base_url="https://one.example/v1", api_key="sk-a", timeout_seconds=5.0)
    second = openai_client(base_url="https://two.example/v1", api_key="sk-a", timeout_seconds=5.0)

    context = transport_tls_context(first)
    assert transport_tls_context(second) is context
    assert context.check_hostname is True
    assert context.verify_mode.name == "CERT_REQUIRED"
    assert first.max_retries == 0
    assert first.timeout.read == 5.0
