"""The benchmarks cannot rot: their smoke sizes run end to end (real gunicorn, a real worker, the memory probe)
and write the JSON the README's table comes from. Speed is never asserted here, only the figures' shape."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPECTED_TARGETS = ["4", "4", "4", "1", "2", "2", "3", "3", "3", "5", "5", "6", "7", "7", "7", "8"]
RESULT_KEYS = {
    "target",
    "name",
    "measured",
    "baseline",
    "unit",
    "baseline_name",
    "ratio",
    "limit",
    "comparison",
    "extra",
    "met",
}


def test_smoke_run_writes_one_figure_per_target_with_positive_finite_ratios(tmp_path):
    env = _smoke_env()
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    document = json.loads((tmp_path / "latest-smoke.json").read_text(encoding="utf-8"))
    assert (document["mode"], document["command"], document["database"], document["broker_and_cache"]) == (
        "smoke",
        "python -m bench --smoke",
        "sqlite",
        "embedded",
    )
    assert document["machine"]["nproc"] == os.cpu_count()
    assert [row["target"] for row in document["results"]] == EXPECTED_TARGETS
    for row in document["results"]:
        assert set(row) == RESULT_KEYS
        assert row["comparison"] in ("<=", ">=")
        for name in ("measured", "baseline", "ratio", "limit"):
            assert isinstance(row[name], float | int) and math.isfinite(row[name]) and row[name] > 0, (row, name)
        expected = row["ratio"] <= row["limit"] if row["comparison"] == "<=" else row["ratio"] >= row["limit"]
        assert row["met"] is expected
    # The HTTP figure had no failed request, and the table printed the same rows.
    http = next(row for row in document["results"] if row["target"] == "1")
    assert (http["extra"]["errors"], http["extra"]["first_error"]) == (0, "")
    assert len([line for line in completed.stdout.splitlines() if line[:2].strip().isdigit()]) == len(EXPECTED_TARGETS)
    assert len(list(tmp_path.glob("bench-smoke-*.json"))) == 1
    # The peers run on PostgreSQL only: the smoke run on SQLite says it skipped them.
    assert [note for note in document["notes"] if note.startswith("peers skipped")], document["notes"]


def _smoke_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "BENCH_DATABASE_URL", "BENCH_REDIS_URL"}
        and not key.startswith("DJANGO_")
    }


def test_scale_section_runs_only_when_asked_and_writes_its_own_figures(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "scale", "--output", str(tmp_path)],
        cwd=REPO_ROOT,
        env=_smoke_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    document = json.loads((tmp_path / "latest-smoke-scale.json").read_text(encoding="utf-8"))
    assert document["sections"] == ["scale"]
    assert document["command"] == "python -m bench --smoke --only scale"
    comic, append, page = document["results"]
    assert [row["target"] for row in document["results"]] == ["S", "S", "S"]
    assert "2 worker services" in comic["name"] and comic["extra"]["step_ms"]["image_generation"] > 0
    # Every size was measured, the largest one is the figure.
    assert list(append["extra"]["points"]) == ["1,000", "3,000", "10,000"]
    assert append["measured"] == append["extra"]["points"]["10,000"]["append_ms"]
    assert page["measured"] == page["extra"]["points"]["10,000"]["first_page_ms"]
    assert not (tmp_path / "latest-smoke.json").exists()
