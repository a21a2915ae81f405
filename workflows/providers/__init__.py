"""Providers of the pipelines, one module each: ``text`` (offline Chinese analysis), ``llm`` (text work, offline
or any OpenAI-compatible chat API) and ``image`` (the offline Pillow renderer or any OpenAI-style images API)."""
