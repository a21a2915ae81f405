"""The modules below services and selectors: reading the cache's figures writes nothing, and the instruments
import nothing of memory_app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import memory_app.instruments as instruments
from memory_app.cache_store import cache_counters_read, cache_counters_read_all
from memory_app.models import CacheStatistics
from memory_app.selectors.cache import cache_statistics_list
from memory_app.services.cache import cache_lookup, cache_set, cache_statistics_flush

pytestmark = pytest.mark.django_db


def test_the_instruments_import_nothing_of_memory_app():
    tree = ast.parse(Path(instruments.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert sorted(name for name in imported if name.startswith("memory_app")) == []


def test_reading_the_counters_leaves_this_process_batch_pending_until_the_caller_flushes():
    cache_statistics_flush()
    cache_set(namespace="text_analysis", key="k", value="v")
    cache_lookup(namespace="text_analysis", key="k")
    cache_lookup(namespace="text_analysis", key="missing")

    before = cache_counters_read(namespace="text_analysis")
    listed = cache_statistics_list()["text_analysis"]

    assert (before["hits"], before["misses"]) == (0, 0)
    assert (listed["hits"], listed["misses"]) == (0, 0)
    assert not CacheStatistics.objects.filter(namespace="text_analysis").exists()

    cache_statistics_flush()

    assert cache_counters_read_all()["text_analysis"] == {"hits": 1, "misses": 1, "corrupted": 0, "evictions": 0}
    assert cache_statistics_list()["text_analysis"]["hit_rate"] == "50.0%"
