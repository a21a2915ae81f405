"""An upstream's reason for refusing a call is kept (cut, without secrets), and provider settings are checked."""

from __future__ import annotations

import logging

import pytest
from django.core.checks import Error, Warning
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from comicmem_site.memory_config import EmbeddingsConfig, ProviderConfig
from memory_app.checks import provider_settings_checked
from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.providers.llm import ChatMessage, OpenAICompatibleLLM, llm_provider
from memory_app.redaction import redact_text

KEY = "sk-live-0123456789abcdef"


def make(server) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(
        ProviderConfig(provider="openai", base_url=server.base_url, api_key=KEY, model="m", timeout_seconds=2.0)
    )


def test_a_4xx_keeps_the_status_and_the_upstream_reason_without_the_key(fake_openai, caplog):
    fake_openai.fail(401, {"error": {"message": f"Incorrect API key provided: {KEY}. Authorization: Bearer {KEY}"}})

    with caplog.at_level(logging.WARNING, logger="memory_app.providers"), pytest.raises(ProviderError) as raised:
        make(fake_openai).chat(messages=[ChatMessage(role="user", content="hi")])

    reason = "Incorrect API key provided: [REDACTED]. Authorization: Bearer [REDACTED]"
    assert type(raised.value) is ProviderError
    assert raised.value.message == f"The LLM provider answered HTTP 401: {reason}"
    assert raised.value.details == {"provider": "openai", "model": "m", "status": 401, "upstream_message": reason}
    assert KEY not in caplog.text
    assert f"HTTP 401: {reason}" in caplog.text


def test_an_unknown_model_and_a_bad_key_do_not_look_the_same(fake_openai):
    fake_openai.fail(400, {"error": {"message": "Invalid model name passed in model=nope"}})
    fake_openai.fail(400, {"error": {"message": "Invalid API key"}})
    llm = make(fake_openai)
    messages = [ChatMessage(role="user", content="hi")]

    errors = []
    for _ in range(2):
        with pytest.raises(ProviderError) as raised:
            llm.chat(messages=messages)
        errors.append(raised.value.details["upstream_message"])

    assert errors == ["Invalid model name passed in model=nope", "Invalid API key"]


def test_a_5xx_reason_is_kept_and_the_error_stays_retryable(fake_openai):
    fake_openai.fail(503, {"error": {"message": "x" * 2000}})

    with pytest.raises(RetryableProviderError) as raised:
        make(fake_openai).chat(messages=[ChatMessage(role="user", content="hi")])

    assert raised.value.details["status"] == 503
    assert raised.value.details["upstream_message"] == "x" * 300 + "…"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token=abcd1234 max_tokens=4000", "token=[REDACTED] max_tokens=4000"),
        ('{"api_key": "xyz12345", "model": "m"}', '{"api_key": "[REDACTED]", "model": "m"}'),
        ("x-api-key: qwertyuiop", "x-api-key: [REDACTED]"),
        ("key sk-abc123456789 was refused", "key [REDACTED] was refused"),
        ("model not found", "model not found"),
    ],
)
def test_secrets_inside_text_are_redacted(text, expected):
    assert redact_text(text) == expected


def test_an_openai_provider_without_a_base_url_is_refused_not_sent_to_the_public_endpoint():
    with pytest.raises(ProviderError) as raised:
        llm_provider(ProviderConfig(provider="openai", model="m"))

    assert raised.value.message.startswith("No LLM base URL is configured")


def _with(settings, **sections):
    settings.MEMORY = settings.MEMORY.model_copy(update=sections)


def test_the_system_check_refuses_an_openai_provider_without_model_or_base_url(settings):
    providers = settings.MEMORY.providers.model_copy(
        update={
            "llm": ProviderConfig(provider="openai"),
            "image": ProviderConfig(provider="openai", base_url="http://127.0.0.1:4000/v1", model="img"),
        }
    )
    _with(settings, providers=providers)

    messages = provider_settings_checked()

    assert [(type(message), message.obj) for message in messages] == [
        (Error, "providers.llm.model"),
        (Error, "providers.llm.base_url"),
    ]
    assert "including /v1" in messages[1].msg and "does not mean the public OpenAI endpoint" in messages[1].msg
    with pytest.raises(SystemCheckError, match="LLM_PROVIDER=openai needs a model"):
        call_command("check")


def test_the_system_check_warns_of_a_base_url_without_a_version_and_checks_the_embeddings_endpoint(settings):
    providers = settings.MEMORY.providers.model_copy(
        update={"llm": ProviderConfig(provider="openai", base_url="http://127.0.0.1:4000", model="m")}
    )
    search = settings.MEMORY.search.model_copy(update={"embeddings": EmbeddingsConfig(base_url="ftp://x/v1")})
    _with(settings, providers=providers, search=search)

    messages = provider_settings_checked()

    assert [(type(message), message.obj) for message in messages] == [
        (Warning, "providers.llm.base_url"),
        (Error, "search.embeddings.base_url"),
        (Error, "search.embeddings.model"),
    ]


def test_the_shipped_settings_pass_the_check():
    assert provider_settings_checked() == []
