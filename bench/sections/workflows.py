"""Target 5: the engine's per-step cost over a bare Celery round trip, and a fan-out like the comic pipeline's
image generation (25 segments, a provider that sleeps 200 ms, worker concurrency 4) against its ideal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.core import BENCH_DIR, REPO_ROOT, Result, Sizes, child_env, median, result

CHAIN_STEPS = 10


class Worker:
    def __init__(self, *, concurrency: int, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        celery = str(Path(sys.executable).with_name("celery"))
        command = [
            celery,
            "-A",
            "comicmem_site",
            "worker",
            "--loglevel=WARNING",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname=bench-{os.getpid()}@%h",
        ]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=child_env(), stdout=self._log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _wait_round_trip(timeout: float = 60) -> None:
    from bench.workflow_types import echo

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            echo.delay(0).get(timeout=2, interval=0.005)
            return
        except Exception:  # noqa: BLE001 - the worker is still starting
            time.sleep(0.2)
    raise RuntimeError("the benchmark's Celery worker did not answer")


def _run_workflow(*, user, project_id: str, workflow_type: str, data: dict, timeout: float) -> float:
    """Start a run, wait for it to complete, return its duration as the database saw it (seconds)."""
    from memory_app.models import WorkflowStatus
    from workflows.engine import workflow_start

    run = workflow_start(user=user, workflow_type=workflow_type, project_id=project_id, data=data)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status == WorkflowStatus.COMPLETED:
            return (run.updated_at - run.created_at).total_seconds()
        if run.status in (WorkflowStatus.FAILED, WorkflowStatus.CANCELLED):
            raise RuntimeError(f"benchmark workflow {run.pk} ended {run.status}: {run.data}")
        time.sleep(0.02)
    raise RuntimeError(f"benchmark workflow {run.pk} did not complete in {timeout} s ({run.status})")


def run(*, sizes: Sizes, broker: str) -> list[Result]:
    from django.contrib.auth import get_user_model

    from bench.workflow_types import echo
    from memory_app.models import Project, WorkflowState

    user, _ = get_user_model().objects.get_or_create(username="bench-workflows")
    WorkflowState.objects.filter(project_id="bench-workflows").delete()
    Project.objects.get_or_create(id="bench-workflows", defaults={"owner": user, "name": "Workflow benchmark"})
    worker = Worker(concurrency=sizes.fanout_concurrency, log_path=BENCH_DIR / "worker.log")
    try:
        _wait_round_trip()
        round_trips = []
        for number in range(max(20, sizes.workflow_chains * 20)):
            start = time.perf_counter()
            echo.delay(number).get(timeout=10, interval=0.002)
            round_trips.append(time.perf_counter() - start)
        bare = median(round_trips)
        chains = [
            _run_workflow(user=user, project_id="bench-workflows", workflow_type="bench_chain", data={}, timeout=120)
            for _ in range(sizes.workflow_chains)
        ]
        per_step = median(chains) / CHAIN_STEPS
        fanout = _run_workflow(
            user=user,
            project_id="bench-workflows",
            workflow_type="bench_comic_fanout",
            data={"segments": sizes.fanout_segments, "image_seconds": sizes.fanout_image_seconds},
            timeout=600,
        )
    finally:
        worker.stop()
    ideal = sizes.fanout_segments * sizes.fanout_image_seconds / sizes.fanout_concurrency
    # The fan-out's run has two plain steps (segmentation, quality control) and the fan-out step's own
    # transition besides the images: three steps' measured cost.
    other_steps = 3 * per_step
    return [
        result(
            target="5",
            name=f"workflow step orchestration ({broker}), per step",
            measured=per_step * 1000,
            baseline=bare * 1000,
            unit="ms",
            baseline_name="bare Celery round trip",
            # The target is an absolute margin: per step ≤ round trip + 15 ms, i.e. this ratio ≤ 1.
            ratio=(per_step * 1000) / (bare * 1000 + 15),
            limit=1.0,
            comparison="<=",
            overhead_ms=round((per_step - bare) * 1000, 2),
            chain_seconds=[round(seconds, 3) for seconds in chains],
        ),
        result(
            target="5",
            name=(
                f"fan-out of {sizes.fanout_segments} x {sizes.fanout_image_seconds * 1000:g} ms images, "
                f"concurrency {sizes.fanout_concurrency}, minus other steps"
            ),
            measured=(fanout - other_steps) * 1000,
            baseline=ideal * 1000,
            unit="ms",
            baseline_name="ideal segments x sleep / concurrency",
            limit=1.3,
            comparison="<=",
            wall_ms=round(fanout * 1000, 1),
            other_steps_ms=round(other_steps * 1000, 1),
        ),
    ]
