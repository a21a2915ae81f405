"""A Celery worker SIGKILLed in the middle of each step of both real pipelines: a new worker completes the run,
and every step's effects happen exactly once (history records, snapshots, characters, pages, and the step
function's own calls: the killed step ran twice, every other step once)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from memory_app.models import Character, UnitStatus, WorkflowState, WorkflowUnit
from tests.integration.test_workflow_worker import FAST, actions, status_of, wait_for
from tests.workflows.real_pipelines.conftest import STORY
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT_STEPS = [
    "text_analysis",
    "character_extraction",
    "plot_summarization",
    "compression_execution",
    "quality_assessment",
]
COMIC_STEPS = [
    "text_segmentation",
    "script_generation",
    "character_design",
    "scene_composition",
    "image_generation",
    "quality_control",
]
# The history action each step's own commit writes (one per unit), besides the engine's workflow_step_completed.
STEP_ACTIONS = {
    "text_analysis": "text_analyzed",
    "text_segmentation": "text_segmentation_completed",
    "character_design": "character_designed",
    "scene_composition": "scene_composed",
    "image_generation": "image_generation_completed",
}
SEGMENTS = 3


def calls(folder: Path, run: WorkflowState) -> Counter[tuple[str, int]]:
    """How many times each (step, unit) function ran for ``run``, in any worker."""
    log = folder / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(
        (step, int(unit))
        for workflow_id, step, unit, _pid in (line.split() for line in lines)
        if workflow_id == str(run.pk)
    )


def kill_during(start_worker, folder: Path, env: dict[str, str], step: str, start_run) -> WorkflowState:
    """Start a worker that holds ``step``; kill it while the step runs; start a plain worker; wait for the end."""
    worker = start_worker(**env, COMICMEM_FAULT_PAUSE_STEP=step)
    run = start_run()
    marker = folder / f"running-{step}"
    wait_for(lambda: marker.exists() and marker.read_text() != "", timeout=120, what=f"{step} to start")
    worker.kill()
    assert WorkflowUnit.objects.filter(workflow=run, step=step, status=UnitStatus.RUNNING).exists()

    start_worker(**env)
    wait_for(lambda: status_of(run) in {"completed", "failed"}, timeout=120, what="the run to end after the kill")
    run.refresh_from_db()
    assert run.status == "completed", run.error
    return run


def expected_calls(folder: Path, steps: list[str], killed: str, units: dict[str, int]) -> Counter[tuple[str, int]]:
    expected = Counter({(step, index): 1 for step in steps for index in range(units.get(step, 1))})
    killed_unit = int((folder / f"running-{killed}").read_text())
    expected[(killed, killed_unit)] += 1  # the execution that died with the worker, and the one that counted
    return expected


def assert_each_step_recorded_once(run: WorkflowState, steps: list[str], units: dict[str, int]) -> None:
    history = actions(run)
    assert history[0] == "workflow_started"
    assert history[-1] == "workflow_completed"
    assert history.count("workflow_step_completed") == len(steps)
    assert history.count("workflow_completed") == 1
    for step, action in STEP_ACTIONS.items():
        if step in steps:
            assert history.count(action) == units.get(step, 1), (step, history)
    assert run.snapshots.filter(event="step_completed").count() == len(steps)
    assert list(run.snapshots.filter(event="step_completed").order_by("id").values_list("step", flat=True)) == steps
    assert not WorkflowUnit.objects.filter(workflow=run).exclude(status=UnitStatus.DONE).exists()
    assert run.progress["percent"] == 100.0


@pytest.fixture
def fault_env(start_worker, media, settings, tmp_path) -> dict[str, str]:
    folder = tmp_path / "faults"
    folder.mkdir()
    return {
        **FAST,
        "COMICMEM_TEST_MEDIA_ROOT": str(media),
        "CACHE_DIR": str(settings.CACHE_DIR),
        "WORKFLOW_MODULES": "tests.faults.step_gate",
        "COMICMEM_FAULT_DIR": str(folder),
    }


@pytest.mark.parametrize("step", TEXT_STEPS)
def test_text_compression_survives_a_worker_killed_in(step, start_worker, fault_env, user, project, manga_shonen):
    folder = Path(fault_env["COMICMEM_FAULT_DIR"])

    def start_run() -> WorkflowState:
        return engine.workflow_start(
            user=user,
            workflow_type="text_compression",
            project_id="proj-001",
            data={"text": STORY},
            preferences={"target_ratio": 0.6},
        )

    run = kill_during(start_worker, folder, fault_env, step, start_run)

    assert calls(folder, run) == expected_calls(folder, TEXT_STEPS, step, {})
    assert_each_step_recorded_once(run, TEXT_STEPS, {})
    assert [entry["step"] for entry in run.compression_history] == ["plot_summarization", "compression_execution"]
    assert run.data["quality"]["passed"] is True


@pytest.mark.parametrize("step", COMIC_STEPS)
def test_comic_generation_survives_a_worker_killed_in(
    step, start_worker, fault_env, media, user, project, manga_shonen
):
    folder = Path(fault_env["COMICMEM_FAULT_DIR"])

    def start_run() -> WorkflowState:
        return engine.workflow_start(
            user=user,
            workflow_type="comic_generation",
            project_id="proj-001",
            data={"text": STORY, "style": "manga_shonen"},
            preferences={"segment_length": 60, "panels_per_page": 2},
        )

    run = kill_during(start_worker, folder, fault_env, step, start_run)
    units = {"image_generation": SEGMENTS}

    assert len(run.data["segments"]) == SEGMENTS
    assert calls(folder, run) == expected_calls(folder, COMIC_STEPS, step, units)
    assert_each_step_recorded_once(run, COMIC_STEPS, units)
    assert sorted(Character.objects.filter(project=project).values_list("name", flat=True)) == ["小明", "老王"]
    assert len(run.data["outputs"]["pages"]) == 2
    assert all((media / name).is_file() for name in run.data["outputs"]["pages"])
    panels = sorted(item["name"] for item in run.data["rendered"])
    assert len(set(panels)) == SEGMENTS
    assert all((media / name).is_file() for name in panels)
