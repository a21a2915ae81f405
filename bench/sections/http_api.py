"""Target 1: appending a message through the API against the bare one-INSERT DRF endpoint, same server."""

from __future__ import annotations

import json
import subprocess
from itertools import count

from bench.core import BENCH_DIR, REPO_ROOT, Result, Sizes, child_env, python, result
from bench.loadgen import json_post, run_load
from bench.server import Gunicorn

CONTENT = "A message of a realistic length, about a panel of the comic: the hero opens the door. "


def _prepare(database_url: str, contexts: int) -> dict:
    output = subprocess.run(
        [python(), "-m", "bench.prepare", str(contexts)],
        cwd=REPO_ROOT,
        env=child_env(DJANGO_SETTINGS_MODULE="bench.settings", DATABASE_URL=database_url),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def run(*, sizes: Sizes, databases: dict[str, str]) -> list[Result]:
    results = []
    for label, database_url in databases.items():
        prepared = _prepare(database_url, sizes.http_connections)
        token, contexts = prepared["token"], prepared["contexts"]
        numbers = count()

        def append(index: int, token: str = token, contexts: list[str] = contexts, numbers=numbers) -> tuple:
            payload = {"role": "user", "content": f"{CONTENT}{next(numbers)}"}
            return json_post(f"/api/context/{contexts[index]}/messages", token, payload)

        def bare(index: int, token: str = token, numbers=numbers) -> tuple:
            return json_post("/bench/bare-insert/", token, {"content": f"{CONTENT}{next(numbers)}"})

        with Gunicorn(database_url=database_url, log_path=BENCH_DIR / f"gunicorn-{label}.log") as server:
            # Alternate baseline and subject twice, so drift of a shared machine touches both alike.
            runs: dict[str, list] = {"bare": [], "append": []}
            for _round in range(2):
                for name, request_for in (("bare", bare), ("append", append)):
                    runs[name].append(
                        run_load(
                            port=server.port,
                            connections=sizes.http_connections,
                            seconds=sizes.http_seconds / 2,
                            request_for=request_for,
                            expected_status=201,
                        )
                    )
        bare_requests = sum(load.requests for load in runs["bare"])
        append_requests = sum(load.requests for load in runs["append"])
        bare_rps = bare_requests / sum(load.seconds for load in runs["bare"])
        append_rps = append_requests / sum(load.seconds for load in runs["append"])
        errors = sum(load.errors for loads in runs.values() for load in loads)
        first_error = next((load.first_error for loads in runs.values() for load in loads if load.first_error), "")
        if bare_requests == 0 or append_requests == 0:
            raise RuntimeError(f"HTTP benchmark on {label} got no successful answer; first error: {first_error}")
        results.append(
            result(
                target="1",
                name=f"API message append, {label}, {sizes.http_connections} connections",
                measured=append_rps,
                baseline=bare_rps,
                unit="req/s",
                baseline_name="bare DRF one-INSERT endpoint",
                limit=0.7,
                comparison=">=",
                errors=errors,
                first_error=first_error,
            )
        )
    return results
