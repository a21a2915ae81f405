"""Providers of the pipelines, one module each: ``text`` (offline Chinese analysis), ``llm`` (text work, offline
or any OpenAI-compatible chat API) and ``image`` (the offline Pillow renderer or any OpenAI-style images API)."""

from __future__ import annotations

from django.conf import settings

from memory_app.providers.fonts import renderer_identity
from memory_app.providers.openai_client import openai_client_warm_up


def providers_warm_up() -> None:
    """Load what every worker process would otherwise load on its first step: jieba's dictionary and its
    part-of-speech table (~1.3 s) and, when a provider speaks the OpenAI API, the ``openai`` package and the
    TLS context of its clients (~0.5 s); and the renderer's identity (the sha256 of the 16 MB lettering font, part
    of every image cache key).

    Called in a worker's main process before its pool forks, so the pool processes inherit them.
    """
    import jieba
    import jieba.posseg  # its import reads the part-of-speech table

    from workflows.providers.text import quiet_jieba

    quiet_jieba()
    jieba.initialize()
    renderer_identity()
    providers = settings.MEMORY.providers
    if "openai" in (providers.image.provider, providers.llm.provider):
        openai_client_warm_up()
