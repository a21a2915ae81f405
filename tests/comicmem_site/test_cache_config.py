from __future__ import annotations

from pathlib import Path

import pytest

from comicmem_site.memory_config import MemoryConfigError, load_memory_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def load(tmp_path: Path, text: str):
    path = tmp_path / "memory_config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_memory_config(path, {})


def test_shipped_cache_options():
    options = load_memory_config(REPO_ROOT / "memory_config.yaml", {}).cache_options
    assert options.model_dump() == {
        "stats_flush_interval": 5.0,
        "stats_flush_in_background": True,
        "lock_timeout": 300,
        "lock_ttl": 10,
        "entry_recheck_seconds": 5.0,
        "orphan_grace_seconds": 3600,
        "cleanup_batch_size": 500,
        "admin_preview_max_bytes": 5 * 1024 * 1024,
    }


def test_a_namespace_added_in_config_alone(tmp_path):
    config = load(
        tmp_path, "memory:\n  cache:\n    thumbnails:\n      backend: file\n      ttl: 60\n      max_disk_usage: 1MB\n"
    )
    assert list(config.cache) == ["thumbnails"]
    assert config.cache["thumbnails"].max_disk_usage == 1024 * 1024


@pytest.mark.parametrize("directory", ["../outside", "/abs/path", "a/../../b", "a//b", ".", "C:/x", "a\\\\..\\\\b"])
def test_a_directory_outside_the_cache_root_stops_start_up(tmp_path, directory):
    with pytest.raises(MemoryConfigError, match=r"memory\.cache\.images: Value error, directory must be a relative"):
        load(tmp_path, f'memory:\n  cache:\n    images:\n      backend: file\n      directory: "{directory}"\n')


def test_directory_is_for_file_namespaces_only(tmp_path):
    with pytest.raises(MemoryConfigError, match="directory applies only to a namespace with backend: file"):
        load(tmp_path, "memory:\n  cache:\n    notes:\n      backend: memory\n      directory: notes\n")


def test_negative_flush_interval_is_refused(tmp_path):
    with pytest.raises(MemoryConfigError, match=r"memory\.cache_options\.stats_flush_interval"):
        load(tmp_path, "memory:\n  cache_options:\n    stats_flush_interval: -1\n")


def test_the_statistics_route_name_is_reserved(tmp_path):
    with pytest.raises(MemoryConfigError, match="cache namespace 'stats' is reserved"):
        load(tmp_path, "memory:\n  cache:\n    stats:\n      backend: memory\n")
