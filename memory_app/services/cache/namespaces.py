"""Namespaces: a namespace's configuration (names come only from config), its folder in the ``cache`` storage and its
local directory under ``CACHE_DIR`` (the blobs themselves in the embedded mode; only staged writes with an object
store)."""

from __future__ import annotations

import functools
from pathlib import Path

from django.conf import settings

from comicmem_site.memory_config import CacheNamespaceConfig
from memory_app.errors import NotFound, ValidationFailed


def cache_namespace_config(*, namespace: str) -> CacheNamespaceConfig:
    """The configuration of a namespace, or NotFound. Names come only from config, so never from a request."""
    namespaces = settings.MEMORY.cache
    if not isinstance(namespace, str) or namespace not in namespaces:
        raise NotFound(
            f"Cache namespace '{namespace}' does not exist.",
            details={"cache_type": str(namespace), "suggestion": f"Use one of: {', '.join(sorted(namespaces))}."},
        )
    return namespaces[namespace]


def cache_namespace_directory(*, namespace: str) -> Path:
    """``CACHE_DIR/<directory or namespace>``, resolved and checked to lie inside ``CACHE_DIR``."""
    config = cache_namespace_config(namespace=namespace)
    directory = _resolved_directory(str(settings.CACHE_DIR), config.directory or namespace)
    if directory is None:
        # The config validator refuses such a directory already; this guards a settings object built by hand.
        raise ValidationFailed(f"The directory of cache namespace '{namespace}' is outside the cache root.")
    return directory


def cache_namespace_location(*, namespace: str) -> str:
    """The namespace's folder in the ``cache`` storage (``<directory or namespace>``, relative, checked like
    ``cache_namespace_directory``): blob names start with it."""
    config = cache_namespace_config(namespace=namespace)
    location = _relative_location(str(settings.CACHE_DIR), config.directory or namespace)
    if location is None:
        raise ValidationFailed(f"The directory of cache namespace '{namespace}' is outside the cache root.")
    return location


@functools.lru_cache(maxsize=256)
def _relative_location(root_name: str, name: str) -> str | None:
    directory = _resolved_directory(root_name, name)
    return None if directory is None else directory.relative_to(Path(root_name).resolve()).as_posix()


@functools.lru_cache(maxsize=256)
def _resolved_directory(root_name: str, name: str) -> Path | None:
    # Resolving walks the path on disk; every file hit needs it, so it is done once per (root, name).
    root = Path(root_name).resolve()
    directory = (root / name).resolve()
    if directory == root or not directory.is_relative_to(root):
        return None
    return directory
