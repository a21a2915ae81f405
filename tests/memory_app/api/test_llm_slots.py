"""generate-with-context holds an LLM slot of its user and of its process; over either bound it is refused at once
(429 per user, 503 per process), with Retry-After, before anything is written."""

from __future__ import annotations

import pytest

from memory_app.models import ContextMessage, ConversationContext
from memory_app.services.conversation import context_create
from memory_app.services.llm_slots import llm_call_slot, llm_calls_per_process

pytestmark = pytest.mark.django_db

URL = "/api/context/generate-with-context"


def set_api(settings, **values) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(update={"api": settings.MEMORY.api.model_copy(update=values)})


def rows() -> tuple[int, int]:
    return ConversationContext.objects.count(), ContextMessage.objects.count()


def test_a_user_over_their_llm_calls_gets_429_and_nothing_is_written(auth_client, user, settings):
    set_api(settings, llm_calls_per_user=2)
    context = context_create(owner=user)
    before = rows()

    with llm_call_slot(user_id=user.pk), llm_call_slot(user_id=user.pk):  # two calls of theirs in flight
        response = auth_client.post(URL, {"context_id": str(context.id), "prompt": "hi"}, format="json")

    assert response.status_code == 429
    assert response["Retry-After"] == "5"
    error = response.json()["error"]
    assert (error["code"], error["details"]) == ("THROTTLED", {"llm_calls_per_user": 2, "retry_after_seconds": 5})
    assert rows() == before
    # Their slots were given back when the calls ended.
    assert auth_client.post(URL, {"context_id": str(context.id), "prompt": "hi"}, format="json").status_code == 200


def test_another_user_is_not_held_back_by_someone_s_llm_calls(auth_client, other_user, settings):
    set_api(settings, llm_calls_per_user=1, llm_calls_per_process=2)

    with llm_call_slot(user_id=other_user.pk):
        response = auth_client.post(URL, {"prompt": "hi"}, format="json")

    assert response.status_code == 200


def test_a_process_at_its_llm_bound_answers_503_and_nothing_is_written(auth_client, user, other_user, settings):
    set_api(settings, llm_calls_per_user=1, llm_calls_per_process=1)
    context = context_create(owner=user)
    before = rows()

    with llm_call_slot(user_id=other_user.pk):
        response = auth_client.post(URL, {"context_id": str(context.id), "prompt": "hi"}, format="json")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    error = response.json()["error"]
    assert error["code"] == "LLM_CAPACITY_EXHAUSTED"
    assert error["details"] == {"llm_calls_per_process": 1, "retry_after_seconds": 5}
    assert rows() == before
    # Refused by the process, the user's one slot was given back: their next call is answered.
    assert auth_client.post(URL, {"context_id": str(context.id), "prompt": "hi"}, format="json").status_code == 200


def test_slots_are_given_back_after_a_provider_failure(auth_client, user, settings, openai_llm):
    set_api(settings, llm_calls_per_user=1, llm_calls_per_process=1)
    openai_llm.fail(500)

    failed = auth_client.post(URL, {"prompt": "hi"}, format="json")
    answered = auth_client.post(URL, {"prompt": "again"}, format="json")

    assert (failed.status_code, answered.status_code) == (502, 200)


@pytest.mark.parametrize(("threads", "configured", "expected"), [("8", None, 4), ("1", None, 1), ("8", 6, 6)])
def test_the_process_bound_is_half_the_web_threads_unless_configured(
    settings, monkeypatch, threads, configured, expected
):
    monkeypatch.setenv("COMICMEM_WEB_THREADS", threads)
    set_api(settings, llm_calls_per_process=configured)

    assert llm_calls_per_process() == expected


def test_in_the_embedded_mode_the_slots_live_in_the_file_cache(settings, tmp_path, user, other_user):
    # make run's processes share the file-based cache under var/; its check-then-write add runs under a flock.
    from concurrent.futures import ThreadPoolExecutor

    from django.core.cache import caches

    from memory_app.errors import LLMCallsPerUserExceeded

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "django_cache"),
        }
    }
    set_api(settings, llm_calls_per_user=2, llm_calls_per_process=50)

    def try_slot(user_id: int) -> bool:
        try:
            with llm_call_slot(user_id=user_id):
                return True
        except LLMCallsPerUserExceeded:
            return False

    with llm_call_slot(user_id=user.pk), llm_call_slot(user_id=user.pk):
        assert sorted(caches["default"].get(f"llm-slot:{user.pk}:{index}") is not None for index in (0, 1)) == [
            True,
            True,
        ]
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert list(pool.map(try_slot, [user.pk] * 4)) == [False] * 4
        assert try_slot(other_user.pk) is True
    assert [caches["default"].get(f"llm-slot:{user.pk}:{index}") for index in (0, 1)] == [None, None]
    assert (settings.VAR_DIR / "llm-slots.lock").exists()


@pytest.fixture
def redis_cache(settings, redis_url):
    import uuid

    from django.core.cache import caches

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"slots-{uuid.uuid4().hex}",
        }
    }
    yield caches["default"]
    caches["default"].clear()


def test_on_redis_a_slot_is_given_back_only_while_it_holds_our_token(settings, user, redis_cache):
    from memory_app.services import llm_slots

    set_api(settings, llm_calls_per_user=1)
    with llm_call_slot(user_id=user.pk):
        assert redis_cache.get(f"llm-slot:{user.pk}:0") is not None
    # Given back: the next call gets the one slot.
    with llm_call_slot(user_id=user.pk):
        pass

    # A call whose lease ran out finds another call's token in its slot: it leaves that one alone.
    key = llm_slots._user_slot_take(user.pk, 1, "ours")
    redis_cache.set(key, "theirs", timeout=60)
    llm_slots._user_slot_give_back(key, "ours")
    assert redis_cache.get(key) == "theirs"
    llm_slots._user_slot_give_back(key, "theirs")
    assert redis_cache.get(key) is None


def test_a_slot_that_cannot_be_given_back_does_not_fail_the_call(settings, user, monkeypatch):
    from django.core.cache import cache

    def unreachable(*args, **kwargs):
        raise ConnectionError("the cache went away")

    with llm_call_slot(user_id=user.pk):
        monkeypatch.setattr(cache, "get", unreachable)
    # The block ended normally: nothing raised from the give-back.
