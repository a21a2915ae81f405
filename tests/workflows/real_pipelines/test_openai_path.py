"""Both pipelines on the OpenAI-compatible providers, against the local fake server over real HTTP."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.models import Character
from tests.fakes.openai_server import RawAnswer
from tests.workflows.real_pipelines.test_runs_inline import start
from workflows import engine

pytestmark = pytest.mark.django_db


def chat_answer(content: str) -> tuple[int, dict]:
    return 200, {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def story_model(body: dict) -> tuple[int, dict]:
    """A scripted model: it answers by what the system message asks for."""
    system = body["messages"][0]["content"]
    if system.startswith("Find the characters"):
        listed = [
            {"name": "小明", "aliases": [], "present": True},
            {"name": "老王", "aliases": ["王伯"], "present": True},
            {"name": "Superman", "aliases": [], "present": True},
        ]
        return chat_answer("```json\n" + json.dumps({"characters": listed}, ensure_ascii=False) + "\n```")
    if system.startswith("Compress the story"):
        return chat_answer("小明和老王去钓鱼。")
    if system.startswith("Write a comic panel script"):
        return chat_answer(
            json.dumps(
                {
                    "scene": "河边",
                    "characters": ["小明"],
                    "dialogue": [{"speaker": "小明", "text": "好大的鱼！"}],
                    "caption": "傍晚",
                }
            )
        )
    if system.startswith("Describe the comic character"):
        return chat_answer(json.dumps({"appearance_features": {"hair_color": "蓝色"}, "personality_traits": ["好奇"]}))
    return chat_answer("?")


def png_b64() -> str:
    output = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(output, format="PNG")
    return base64.b64encode(output.getvalue()).decode()


@pytest.fixture
def online(settings, openai_llm):
    openai_llm.route("/v1/chat/completions", story_model)
    openai_llm.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": png_b64()}]}))
    providers = settings.MEMORY.providers.model_copy(
        update={
            "image": ProviderConfig(
                provider="openai", base_url=openai_llm.base_url, model="seedream", timeout_seconds=2.0
            )
        }
    )
    settings.MEMORY = settings.MEMORY.model_copy(update={"providers": providers})
    return openai_llm


def paths(server) -> list[str]:
    return [request.path for request in server.requests]


def test_text_compression_through_the_chat_api(run_inline, user, project, story, media, online):
    run = start(run_inline, user, "text_compression", {"text": story}, {"target_ratio": 0.1, "ratio_tolerance": 0.2})

    assert run.status == "completed", run.error
    assert run.data["main_characters"] == ["小明", "老王"]  # the invented name is dropped
    assert run.data["compressed_text"] == "小明和老王去钓鱼。"
    assert run.data["quality"]["passed"] is True
    assert paths(online) == ["/v1/chat/completions"] * 3  # names, plot summary, compression


def test_comic_generation_through_chat_and_images_then_a_rerun_is_free(run_inline, user, project, story, media, online):
    preferences = {"segment_length": 60}
    first = start(run_inline, user, "comic_generation", {"text": story}, preferences)

    assert first.status == "completed", first.error
    segments = len(first.data["segments"])
    assert paths(online).count("/v1/images/generations") == segments
    assert first.data["scripts"][0]["dialogue"] == [{"speaker": "小明", "text": "好大的鱼！"}]
    assert Character.objects.get(project=project, name="小明").appearance_features["hair_color"] == "蓝色"
    with Image.open(io.BytesIO(open(media / first.data["outputs"]["pages"][0], "rb").read())) as page:
        assert page.format == "PNG"
    calls = len(online.requests)

    second = start(run_inline, user, "comic_generation", {"text": story}, preferences)

    assert second.status == "completed", second.error
    assert len(online.requests) == calls  # neither the chat model nor the image model was called again


def test_retryable_provider_errors_are_retryable_for_the_engine():
    assert engine.is_retryable(RetryableProviderError("busy")) is True
    assert engine.is_retryable(ProviderError("bad request")) is False

    class Flagged(Exception):
        retryable = True

    assert engine.is_retryable(Flagged()) is True


def test_a_failing_image_api_fails_the_run_after_retries(run_inline, user, project, story, media, online, settings):
    online.route("/v1/images/generations", lambda body: (503, {"error": {"message": "busy"}}))
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"workflow": settings.MEMORY.workflow.model_copy(update={"max_retries": 1, "retry_backoff_base": 0.01})}
    )

    run = start(run_inline, user, "comic_generation", {"text": story}, {"segment_length": 200})

    assert run.status == "failed"
    assert run.error["type"] == "RetryableProviderError"
    assert run.error["retryable"] is True
    assert run.error["attempts"] == 2
    assert run.current_step == "image_generation"


def test_an_image_answer_cut_short_is_retried_and_fails_the_run_with_a_clean_provider_error(
    run_inline, user, project, story, media, online, settings
):
    online.route(
        "/v1/images/generations", lambda body: (200, RawAnswer(b'{"data": [{"b64_json": "iVBOR', declared_length=900))
    )
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"workflow": settings.MEMORY.workflow.model_copy(update={"max_retries": 1, "retry_backoff_base": 0.01})}
    )

    run = start(run_inline, user, "comic_generation", {"text": story}, {"segment_length": 200})

    assert (run.status, run.current_step) == ("failed", "image_generation")
    assert (run.error["type"], run.error["retryable"], run.error["attempts"]) == ("RetryableProviderError", True, 2)
    assert run.error["message"] == (
        "The image provider's answer was cut short: peer closed connection without sending complete message body "
        "(received 29 bytes, expected 900)"
    )
    assert paths(online).count("/v1/images/generations") == 2


def test_an_html_page_instead_of_a_chat_answer_is_retried_and_fails_the_run_with_a_clean_provider_error(
    run_inline, user, project, story, media, online, settings
):
    page = RawAnswer(b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
    online.route("/v1/chat/completions", lambda body: (200, page))
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"workflow": settings.MEMORY.workflow.model_copy(update={"max_retries": 1, "retry_backoff_base": 0.01})}
    )

    run = start(run_inline, user, "text_compression", {"text": story}, {"target_ratio": 0.1})

    assert run.status == "failed"
    assert (run.error["type"], run.error["retryable"], run.error["attempts"]) == ("RetryableProviderError", True, 2)
    assert run.error["message"] == (
        "The LLM provider's answer is not JSON (text/html, 41 bytes): cut short, or a page from something in between: "
        "'<html><body>502 Bad Gateway</body></html>'"
    )
    assert run.error["details"]["answer"] == "<html><body>502 Bad Gateway</body></html>"
    assert paths(online) == ["/v1/chat/completions"] * 2


def test_a_chat_answer_that_is_not_json_is_not_cached_so_the_next_run_asks_again(
    run_inline, user, project, story, media, online
):
    prose = ["Sure! The characters are 小明 and 老王."]
    online.route("/v1/chat/completions", lambda body: chat_answer(prose.pop()) if prose else story_model(body))
    failed = start(run_inline, user, "text_compression", {"text": story}, {"target_ratio": 0.1, "ratio_tolerance": 0.2})

    second = start(run_inline, user, "text_compression", {"text": story}, {"target_ratio": 0.1, "ratio_tolerance": 0.2})

    assert (failed.status, failed.error["type"], failed.error["retryable"]) == ("failed", "ProviderError", False)
    assert failed.error["message"] == "The LLM did not answer with JSON: 'Sure! The characters are 小明 and 老王.'"
    assert second.status == "completed", second.error
    assert second.data["main_characters"] == ["小明", "老王"]
    assert paths(online) == ["/v1/chat/completions"] * 4  # the prose, then names, plot summary, compression
