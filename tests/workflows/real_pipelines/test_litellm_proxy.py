"""The providers against a real OpenAI-compatible server: LiteLLM's proxy on loopback (tests/support/litellm_proxy.py)
with a custom model, the proxy's own errors and its image mock. Next to the fake server's tests, not instead."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from comicmem_site.memory_config import ProviderConfig
from memory_app.models import SUMMARY_POSITION, Character, ContextMessage
from memory_app.services.conversation import NewMessage, context_append, context_create
from tests.support.litellm_proxy import ECHOED_KEY
from tests.workflows.real_pipelines.test_runs_inline import start

pytestmark = [pytest.mark.django_db, pytest.mark.integration, pytest.mark.slow]

CAPTION_FILL = (255, 250, 220)


def providers(settings, proxy, *, llm_model: str = "story-model") -> None:
    """Chat and images both through the proxy, as LLM_* and IMAGE_* would set them."""
    llm = ProviderConfig(
        provider="openai", base_url=proxy.base_url, api_key=proxy.api_key, model=llm_model, timeout_seconds=20.0
    )
    image = ProviderConfig(
        provider="openai", base_url=proxy.base_url, api_key=proxy.api_key, model="mock-image", timeout_seconds=20.0
    )
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"providers": settings.MEMORY.providers.model_copy(update={"llm": llm, "image": image})}
    )


@pytest.fixture
def through_proxy(settings, litellm_proxy):
    providers(settings, litellm_proxy)
    return litellm_proxy


def test_chat_through_the_proxy(auth_client, user, through_proxy):
    response = auth_client.post("/api/context/generate-with-context", {"prompt": "你好，代理"}, format="json")

    assert response.status_code == 200, response.json()
    data = response.json()["data"]
    assert data["message"]["content"] == "代理回答: 你好，代理"
    assert (data["provider"], data["model"]) == ("openai", "story-model")


def test_the_rolling_summary_through_the_proxy(settings, user, through_proxy):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"summarize_evicted": True})}
    )
    context = context_create(owner=user, max_messages=2, max_tokens=1000)
    for content in ["第一句。", "第二句。", "第三句。"]:
        context_append(context=context, messages=NewMessage(role="user", content=content))

    summary = ContextMessage.objects.get(context=context, position=SUMMARY_POSITION)
    assert summary.content.startswith("Summary of earlier conversation: 代理摘要: ")
    assert "第二句" in summary.content


def test_comic_generation_through_the_proxy_with_image_urls_on_its_host(
    run_inline, user, project, story, media, through_proxy
):
    run = start(run_inline, user, "comic_generation", {"text": story}, {"segment_length": 60})

    assert run.status == "completed", run.error
    assert run.data["main_characters"] == ["小明", "老王"]
    # The proxy's image mock answers with a URL on 127.0.0.1, the proxy's own host: downloaded, then lettered.
    with Image.open(io.BytesIO((media / run.data["rendered"][0]["name"]).read_bytes())) as panel:
        assert panel.size == (512, 512)
        assert panel.getpixel((14, 14)) == CAPTION_FILL
        assert panel.getpixel((250, 420)) == (200, 120, 60)  # the served picture under the lettering
    # The model described 小明's hair as 黑色 and his clothes as 蓝色校服: drawn so.
    character = Character.objects.get(project=project, name="小明")
    assert character.appearance_features["hair_color"] == "黑色"
    design = next(item for item in run.data["characters"] if item["name"] == "小明")
    assert (design["colors"]["hair"], design["colors"]["clothing"]) == ("#222222", "#1B98E0")


def test_text_compression_through_the_proxy(run_inline, user, project, story, through_proxy):
    run = start(run_inline, user, "text_compression", {"text": story}, {"target_ratio": 0.3, "ratio_tolerance": 0.5})

    assert run.status == "completed", run.error
    assert run.data["main_characters"] == ["小明", "老王"]
    assert [entry["step"] for entry in run.compression_history] == ["plot_summarization", "compression_execution"]


def test_an_unknown_model_is_a_502_that_says_so(auth_client, settings, litellm_proxy):
    providers(settings, litellm_proxy, llm_model="no-such-model")

    response = auth_client.post("/api/context/generate-with-context", {"prompt": "hi"}, format="json")

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "PROVIDER_ERROR"
    assert error["details"]["status"] == 400
    assert "Invalid model name passed in model=no-such-model" in error["details"]["upstream_message"]
    assert error["message"].startswith("The LLM provider answered HTTP 400: ")


def test_a_refusal_keeps_its_reason_without_the_key_in_the_502_and_in_the_failed_run(
    auth_client, run_inline, user, project, story, settings, litellm_proxy
):
    providers(settings, litellm_proxy, llm_model="refusing-model")

    response = auth_client.post("/api/context/generate-with-context", {"prompt": "hi"}, format="json")
    run = start(run_inline, user, "text_compression", {"text": story}, {"target_ratio": 0.3})

    error = response.json()["error"]
    assert (response.status_code, error["details"]["status"]) == (502, 401)
    assert "Incorrect API key provided" in error["details"]["upstream_message"]
    assert run.status == "failed"
    assert "HTTP 401: " in run.error["message"] and "Incorrect API key provided" in run.error["message"]
    assert run.error["details"]["status"] == 401
    for text in (response.content.decode(), str(run.error)):
        assert ECHOED_KEY not in text
        assert "[REDACTED]" in text
