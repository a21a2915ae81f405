from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from comicmem_site.memory_config import MemoryConfigError, load_memory_config, parse_size

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "memory_config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_file_loads_with_the_seed_defaults():
    config = load_memory_config(REPO_ROOT / "memory_config.yaml", {})

    assert config.conversation.default_max_messages == 20
    assert config.conversation.max_contexts_per_user == 10
    assert config.history.retention_days == 90
    assert config.history.max_history_per_project == 1000
    assert config.cache["text_analysis"].ttl == 1800
    assert config.cache["text_analysis"].max_size == 100
    assert config.cache["api_responses"].max_size == 500
    assert config.cache["images"].backend == "file"
    assert config.cache["images"].max_disk_usage == 10 * 1024**3
    assert config.workflow.max_state_history == 50
    assert config.api.max_body_bytes == 1024 * 1024
    assert config.pipelines.font_path is None  # the font of the Python package


def test_settings_expose_the_typed_object():
    assert settings.MEMORY.cache["images"].ttl == 86400


def test_environment_overrides_the_file(tmp_path):
    environ = {
        "MEMORY_MAX_CONTEXTS": "500",
        "CACHE_DIR": "/data/cache",
        "HISTORY_RETENTION_DAYS": "30",
        "AUTO_CLEANUP_ENABLED": "false",
        "MEMORY_MONITORING_ENABLED": "0",
    }
    config = load_memory_config(REPO_ROOT / "memory_config.yaml", environ)

    assert config.conversation.max_active_contexts == 500
    assert config.storage.cache_dir == "/data/cache"
    assert config.history.retention_days == 30
    assert config.maintenance.auto_cleanup_enabled is False
    assert config.monitoring.enabled is False


def test_provider_answers_are_limited_to_32_mib_unless_the_environment_says_otherwise():
    shipped = load_memory_config(REPO_ROOT / "memory_config.yaml", {})
    overridden = load_memory_config(
        REPO_ROOT / "memory_config.yaml", {"IMAGE_MAX_ANSWER_BYTES": "64MB", "LLM_MAX_ANSWER_BYTES": "1048576"}
    )

    assert (shipped.providers.image.max_answer_bytes, shipped.providers.llm.max_answer_bytes) == (32 * 1024**2,) * 2
    assert overridden.providers.image.max_answer_bytes == 64 * 1024**2
    assert overridden.providers.llm.max_answer_bytes == 1024**2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("memory:\n  conversation:\n    bogus: 1\n", "memory.conversation.bogus: unknown key"),
        (
            "memory:\n  history:\n    retention_days: '90'\n",
            "memory.history.retention_days: Input should be a valid integer",
        ),
        ("memory:\n  cache:\n    images:\n      backend: file\n      ttl: -5\n", "memory.cache.images.ttl"),
        ("memory:\n  cache:\n    images:\n      max_disk_usage: 10XB\n", "memory.cache.images.max_disk_usage"),
        ("memory:\n  workflow:\n    max_state_history: 0\n", "memory.workflow.max_state_history"),
        ("other: {}\n", "unknown key(s) ['other']"),
        ("memory: [\n", "not valid YAML"),
        (
            "memory:\n  pipelines:\n    font_path: /nonexistent/font.otf\n",
            "memory.pipelines.font_path: Value error, '/nonexistent/font.otf' is not a file",
        ),
    ],
)
def test_bad_values_name_the_key_and_the_file(tmp_path, text, expected):
    path = write(tmp_path, text)

    with pytest.raises(MemoryConfigError) as raised:
        load_memory_config(path, {})

    assert expected in str(raised.value)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HISTORY_RETENTION_DAYS", "abc", "HISTORY_RETENTION_DAYS: 'abc' is not an integer"),
        ("HISTORY_RETENTION_DAYS", "-1", "memory.history.retention_days"),
        ("AUTO_CLEANUP_ENABLED", "maybe", "AUTO_CLEANUP_ENABLED: 'maybe' is not a boolean"),
    ],
)
def test_bad_environment_values_name_the_variable(variable, value, expected):
    with pytest.raises(MemoryConfigError) as raised:
        load_memory_config(REPO_ROOT / "memory_config.yaml", {variable: value})

    assert expected in str(raised.value)
    assert variable in str(raised.value)


def test_sizes_parse_binary_units():
    assert parse_size("10GB") == 10 * 1024**3
    assert parse_size("512 MB") == 512 * 1024**2
    assert parse_size("1.5KB") == 1536
    assert parse_size(42) == 42
    with pytest.raises(ValueError):
        parse_size(True)


def test_start_up_stops_on_a_bad_file_and_names_it(tmp_path):
    path = write(tmp_path, "memory:\n  cache:\n    text_analysis:\n      ttl: -1\n")
    env = {**os.environ, "MEMORY_CONFIG_FILE": str(path), "DJANGO_SETTINGS_MODULE": "comicmem_site.settings.test"}

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "memory.cache.text_analysis.ttl" in result.stderr
    assert str(path) in result.stderr


def test_workflow_lease_and_recovery_come_from_the_file_or_the_environment():
    shipped = load_memory_config(REPO_ROOT / "memory_config.yaml", {})
    overridden = load_memory_config(
        REPO_ROOT / "memory_config.yaml",
        {"WORKFLOW_LEASE_SECONDS": "3", "WORKFLOW_RECOVERY_INTERVAL": "1", "WORKFLOW_MAX_RETRIES": "0"},
    )

    assert (shipped.workflow.lease_seconds, shipped.workflow.recovery_interval) == (30, 10)
    assert shipped.workflow.queue_lease_seconds == 600
    assert (overridden.workflow.lease_seconds, overridden.workflow.recovery_interval) == (3, 1)
    assert overridden.workflow.max_retries == 0
    with pytest.raises(MemoryConfigError, match="WORKFLOW_LEASE_SECONDS"):
        load_memory_config(REPO_ROOT / "memory_config.yaml", {"WORKFLOW_LEASE_SECONDS": "soon"})


def test_per_user_limits_come_from_the_file_or_the_environment():
    shipped = load_memory_config(REPO_ROOT / "memory_config.yaml", {})
    overridden = load_memory_config(
        REPO_ROOT / "memory_config.yaml",
        {
            "WORKFLOW_MAX_ACTIVE_RUNS_PER_USER": "2",
            "WORKFLOW_MAX_UNFINISHED_RUNS_PER_USER": "5",
            "MEMORY_MAX_PROJECTS_PER_USER": "50",
        },
    )

    assert (shipped.workflow.max_active_runs_per_user, shipped.workflow.max_unfinished_runs_per_user) == (3, 50)
    assert shipped.projects.max_projects_per_user == 1000
    assert (overridden.workflow.max_active_runs_per_user, overridden.workflow.max_unfinished_runs_per_user) == (2, 5)
    assert overridden.projects.max_projects_per_user == 50
    with pytest.raises(MemoryConfigError, match=r"memory\.projects\.max_projects_per_user"):
        load_memory_config(REPO_ROOT / "memory_config.yaml", {"MEMORY_MAX_PROJECTS_PER_USER": "0"})
    with pytest.raises(MemoryConfigError, match="max_active_runs_per_user must not exceed"):
        load_memory_config(REPO_ROOT / "memory_config.yaml", {"WORKFLOW_MAX_UNFINISHED_RUNS_PER_USER": "2"})


def test_an_auto_save_interval_other_than_0_is_refused_naming_the_key(tmp_path):
    # Every acknowledged write is durable at once: a save window would promise something that does not exist.
    assert load_memory_config(write(tmp_path, "memory:\n  conversation:\n    auto_save_interval: 0\n"), {})
    with pytest.raises(MemoryConfigError, match=r"memory\.conversation\.auto_save_interval: .*only 0 is supported"):
        load_memory_config(write(tmp_path, "memory:\n  conversation:\n    auto_save_interval: 600\n"), {})


def test_backup_and_release_keys_load_from_the_file(tmp_path):
    text = (
        "memory:\n  workflow:\n    auto_backup: false\n    backup_interval: 60\n    backup_keep: 3\n"
        "  conversation:\n    release_interval_seconds: 120\n    release_location: old/contexts\n"
    )
    config = load_memory_config(write(tmp_path, text), {})

    assert (config.workflow.auto_backup, config.workflow.backup_interval, config.workflow.backup_keep) == (False, 60, 3)
    assert (config.conversation.release_interval_seconds, config.conversation.release_location) == (120, "old/contexts")
    with pytest.raises(MemoryConfigError, match=r"memory\.workflow\.backup_keep"):
        load_memory_config(write(tmp_path, "memory:\n  workflow:\n    backup_keep: 0\n"), {})


def test_start_up_stops_on_an_auto_save_interval_and_names_it(tmp_path):
    path = write(tmp_path, "memory:\n  conversation:\n    auto_save_interval: 600\n")
    env = {**os.environ, "MEMORY_CONFIG_FILE": str(path), "DJANGO_SETTINGS_MODULE": "comicmem_site.settings.test"}

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "memory.conversation.auto_save_interval" in result.stderr and "only 0 is supported" in result.stderr


def test_provider_timeouts_and_image_allowed_hosts_come_from_the_environment():
    config = load_memory_config(
        REPO_ROOT / "memory_config.yaml",
        {
            "LLM_TIMEOUT_SECONDS": "12.5",
            "IMAGE_TIMEOUT_SECONDS": "300",
            "IMAGE_ALLOWED_HOSTS": " Images.LAN ,127.0.0.1,",
        },
    )

    assert config.providers.llm.timeout_seconds == 12.5
    assert config.providers.image.timeout_seconds == 300.0
    assert config.providers.image.allowed_hosts == ["images.lan", "127.0.0.1"]


def test_a_provider_timeout_that_is_not_a_number_stops_start_up():
    with pytest.raises(MemoryConfigError, match="LLM_TIMEOUT_SECONDS"):
        load_memory_config(REPO_ROOT / "memory_config.yaml", {"LLM_TIMEOUT_SECONDS": "soon"})
