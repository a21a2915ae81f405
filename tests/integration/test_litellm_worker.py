"""A comic run on a real Celery worker whose providers are LiteLLM's proxy (tests/support/litellm_proxy.py),
configured as a deployment would: by the LLM_* and IMAGE_* environment variables; and a refused call's reason in
the failed run."""

from __future__ import annotations

import pytest

from memory_app.models import Character
from tests.integration.test_pipelines_worker import start
from tests.integration.test_workflow_worker import FAST, status_of, wait_for
from tests.support.litellm_proxy import ECHOED_KEY
from tests.workflows.real_pipelines.conftest import STORY

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def proxy_env(proxy, media, settings, *, llm_model: str = "story-model") -> dict[str, str]:
    return {
        **FAST,
        "COMICMEM_TEST_MEDIA_ROOT": str(media),
        "CACHE_DIR": str(settings.CACHE_DIR),
        "LLM_PROVIDER": "openai",
        "LLM_BASE_URL": proxy.base_url,
        "LLM_API_KEY": proxy.api_key,
        "LLM_MODEL": llm_model,
        "LLM_TIMEOUT_SECONDS": "20",
        "IMAGE_PROVIDER": "openai",
        "IMAGE_BASE_URL": proxy.base_url,
        "IMAGE_API_KEY": proxy.api_key,
        "IMAGE_MODEL": "mock-image",
        "IMAGE_TIMEOUT_SECONDS": "20",
    }


def test_a_comic_run_through_the_proxy_on_a_worker(
    start_worker, litellm_proxy, media, settings, user, project, manga_shonen
):
    start_worker(**proxy_env(litellm_proxy, media, settings))

    run = start(user, "comic_generation", {"text": STORY, "style": "manga_shonen"}, {"segment_length": 60})
    wait_for(lambda: status_of(run) in {"completed", "failed"}, timeout=120, what="the run to end")

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert {item["provider"] for item in run.data["rendered"]} == {"openai"}
    assert Character.objects.get(project=project, name="小明").appearance_features["hair_color"] == "黑色"
    assert len(run.data["outputs"]["pages"]) >= 1


def test_a_refused_call_fails_the_run_with_the_upstream_reason(
    start_worker, litellm_proxy, media, settings, user, project
):
    start_worker(**proxy_env(litellm_proxy, media, settings, llm_model="refusing-model"))

    run = start(user, "text_compression", {"text": STORY}, {"target_ratio": 0.3})
    wait_for(lambda: status_of(run) in {"completed", "failed"}, timeout=120, what="the run to end")

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error["message"].startswith("The LLM provider answered HTTP 401: ")
    assert "Incorrect API key provided" in run.error["message"]
    assert run.error["details"]["status"] == 401
    assert ECHOED_KEY not in str(run.error)
