"""Every generation call of the pipelines is cached here, one way: chat answers in ``api_responses``, panel
images in ``images``.

The providers (``workflows.providers``) only generate; whether a result is read from the cache, and how its
hit or miss is counted, is decided at this one layer, by the run's cache policy (``preferences.cache``: ``use``
reads and stores, ``refresh`` recomputes and stores, ``bypass`` neither reads nor writes), which the engine sets
around each step (``workflows.engine.CACHE_POLICY``). The keys are the providers' own
(``ChatRequest.cache_key``, ``PanelRequest.cache_key``), so entries cached before this module existed still hit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from django.conf import settings

from memory_app.services.cache import CachePolicy, cache_get_or_compute
from memory_app.services.storage_lifecycle import project_cache_use_record
from workflows.engine import CACHE_POLICY
from workflows.providers.llm import ChatRequest, chat_answer

R = TypeVar("R")


@dataclass(frozen=True)
class Generated(Generic[R]):
    value: R
    cached: bool  # True when the value came from the cache and nothing was generated


def generation_cached(
    *,
    namespace: str,
    key: dict[str, Any],
    generate: Callable[[], R],
    content_type: str | None = None,
    project_key: str | None = None,
) -> Generated[R]:
    """The cached result of ``key`` in ``namespace``, generated (and stored) on a miss; as the run's cache policy
    says (``refresh``: generated and stored again; ``bypass``: generated, the cache untouched).

    With ``project_key`` (a project's internal key) the entry is noted as used by that project, hit or miss:
    deleting the project deletes the entries no other live project used."""
    generated: list[bool] = []

    def compute() -> R:
        generated.append(True)
        return generate()

    policy = cast(CachePolicy, CACHE_POLICY.get())  # checked when the run was asked for (run_preferences_check)
    value = cache_get_or_compute(
        namespace=namespace, key=key, compute=compute, content_type=content_type, policy=policy
    )
    if project_key is not None and policy != "bypass":
        project_cache_use_record(project_key=project_key, namespace=namespace, key=key, generated=bool(generated))
    return Generated(value=value, cached=not generated)


def chat_cached(request: ChatRequest) -> str:
    """The chat model's answer to ``request``, from the ``api_responses`` cache when it was asked before (the
    ``ask`` the pipelines pass to ``workflows.providers.llm``)."""
    config = settings.MEMORY.providers.llm
    return generation_cached(
        namespace="api_responses",
        key=request.cache_key(config),
        generate=lambda: chat_answer(request, config=config),
    ).value
