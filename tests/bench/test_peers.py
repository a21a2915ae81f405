"""The peers' comparison (target 5 against LangGraph and DBOS): how their figures become rows, how their absence
is said, and, where their virtualenv is installed, that they really run the same chain on PostgreSQL."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from bench.core import SMOKE
from bench.sections import peers
from tests.conftest import service_unavailable

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
POSTGRES = "postgres://postgres@127.0.0.1:5432/comicmem_bench_check"


def _fake_peers(tmp_path: Path, figures: dict) -> Path:
    """An interpreter that answers whatever it is asked to run with the given figures, as bench/peers.py prints."""
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\necho 'starting'\necho '{json.dumps(figures)}'\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def compared(*, database_url: str, our_per_step_ms: float, log, notes: list[str]) -> list:
    """What the workflows section does: measure the peers, then make rows of our per step over theirs."""
    figures = peers.measure(sizes=SMOKE, database_url=database_url, log=log, notes=notes)
    return peers.results(figures=figures, our_per_step_ms=our_per_step_ms, log=log, notes=notes)


def test_each_measured_peer_becomes_a_row_of_our_per_step_over_theirs(tmp_path, monkeypatch):
    figures = {
        "langgraph": {"per_step_ms": 4.0, "version": "1.2.22", "chain_seconds": [0.04]},
        "dbos": {"error": "OperationalError: connection refused"},
    }
    monkeypatch.setenv("BENCH_PEERS_PYTHON", str(_fake_peers(tmp_path, figures)))
    notes: list[str] = []

    rows = compared(database_url=POSTGRES, our_per_step_ms=6.0, log=lambda _message: None, notes=notes)

    assert len(rows) == 1
    (row,) = rows
    assert (row.target, row.measured, row.baseline, row.ratio, row.met) == ("5", 6.0, 4.0, 1.5, False)
    assert "LangGraph" in row.name and "langgraph 1.2.22" in row.baseline_name
    assert row.extra["peer"] == {"version": "1.2.22", "chain_seconds": [0.04]}
    assert notes == ["peer dbos not measured: OperationalError: connection refused"]


def test_peers_are_skipped_with_a_note_without_their_virtualenv_or_postgresql(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_PEERS_PYTHON", str(tmp_path / "absent" / "python"))
    notes: list[str] = []
    log = notes.append

    assert compared(database_url=POSTGRES, our_per_step_ms=6.0, log=lambda _m: None, notes=notes) == []
    assert compared(database_url="sqlite:///x", our_per_step_ms=6.0, log=log, notes=[]) == []

    assert notes[0].startswith("peers skipped: no virtualenv at")
    assert notes[1] == "peers skipped: they run on PostgreSQL, and this run's database is not"


def test_a_failing_peers_process_fails_loudly(tmp_path, monkeypatch):
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\necho 'ImportError: no langgraph' >&2\nexit 1\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BENCH_PEERS_PYTHON", str(script))

    with pytest.raises(RuntimeError, match="no langgraph"):
        compared(database_url=POSTGRES, our_per_step_ms=6.0, log=lambda _m: None, notes=[])


@pytest.mark.integration
@pytest.mark.slow
def test_the_installed_peers_run_the_same_chain_durably_on_postgresql():
    python = peers.peers_python()
    url = os.environ.get("TEST_DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip("TEST_DATABASE_URL names no PostgreSQL server for the peers")
    if not python.exists():
        # `make test` builds it (make bench-peers), so in CI its absence is a failure.
        service_unavailable(f"the peers' virtualenv is not installed at {python} (make bench-peers)")
    # The peers make their own databases beside this one (``<name>_langgraph``, ``<name>_dbos``).
    database = urlparse(url)._replace(query="").geturl()

    completed = subprocess.run(
        [str(python), str(REPO_ROOT / "bench" / "peers.py"), "--database-url", database, "--chains", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(figures) == {"langgraph", "dbos"}
    for figure in figures.values():
        assert figure["per_step_ms"] > 0 and figure["steps"] == 10 and figure["state_bytes"] == 1000, figure
    assert figures["langgraph"]["durability"] == "sync"
