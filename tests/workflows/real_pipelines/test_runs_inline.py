"""Both pipelines end to end with tasks run inline (eager): data, history, snapshots, outputs, cache."""

from __future__ import annotations

import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from memory_app.models import Character, HistoryRecord, StyleUsage, WorkflowState
from workflows import engine

pytestmark = pytest.mark.django_db


def start(run_inline, user, workflow_type, data, preferences=None) -> WorkflowState:
    run = run_inline(
        engine.workflow_start,
        user=user,
        workflow_type=workflow_type,
        project_id="proj-001",
        data=data,
        preferences=preferences or {},
    )
    run.refresh_from_db()
    return run


def actions(run: WorkflowState) -> list[str]:
    return list(HistoryRecord.objects.filter(workflow_id=run.pk).order_by("id").values_list("action", flat=True))


def test_text_compression_runs_and_writes_compression_history(run_inline, user, project, story, media):
    run = start(run_inline, user, "text_compression", {"text": story}, {"target_ratio": 0.6})

    assert run.status == "completed", run.error
    # 老王 and 王伯: forms of address of one surname and one kind, never named in one sentence: one character.
    assert run.data["main_characters"] == ["小明", "老王"]
    assert [entry["step"] for entry in run.compression_history] == ["plot_summarization", "compression_execution"]
    execution = run.compression_history[1]
    assert execution["input_size"] == len(story)
    assert execution["output_size"] == len(run.data["compressed_text"])
    assert execution["compression_ratio"] == round(execution["output_size"] / execution["input_size"], 4)
    assert "_compression_history" not in run.data
    quality = run.data["quality"]
    assert quality["missing_characters"] == []
    assert quality["passed"] is True
    assert abs(quality["compression_ratio"] - 0.6) <= 0.1
    assert actions(run) == [
        "workflow_started",
        "text_analyzed",
        "workflow_step_completed",
        "character_extracted",
        "workflow_step_completed",
        "plot_summarized",
        "workflow_step_completed",
        "text_compressed",
        "workflow_step_completed",
        "workflow_step_completed",
        "workflow_completed",
    ]


def test_comic_generation_runs_and_a_second_run_draws_nothing(run_inline, user, project, story, media, monkeypatch):
    from workflows.providers.image import OfflineRenderer

    calls: list[int] = []
    original = OfflineRenderer.generate

    def counting(self, request):
        calls.append(request.seed)
        return original(self, request)

    monkeypatch.setattr(OfflineRenderer, "generate", counting)
    preferences = {"segment_length": 60, "panels_per_page": 2}
    first = start(run_inline, user, "comic_generation", {"text": story, "style": "manga_shonen"}, preferences)

    assert first.status == "completed", first.error
    panels = first.data["outputs"]["panels"]
    pages = first.data["outputs"]["pages"]
    segments = len(first.data["segments"])
    assert len(panels) == segments == len(calls)
    assert len(pages) == (segments + 1) // 2
    for name in panels + pages:
        assert name.startswith(f"projects/proj-001/images/{first.pk}/")
        with default_storage.open(name, "rb") as handle, Image.open(io.BytesIO(handle.read())) as image:
            assert image.format == "PNG"
    assert sorted(Character.objects.filter(project=project).values_list("name", flat=True)) == ["小明", "老王"]
    assert Character.objects.get(project=project, name="老王").aliases == ["王伯"]
    assert StyleUsage.objects.filter(style_id="manga_shonen", project=project, workflow_id=first.pk).count() == 1
    seeds = [item["seed"] for item in first.data["rendered"]]
    assert seeds == [first.preferences["seed"] + index for index in range(segments)]

    second = start(run_inline, user, "comic_generation", {"text": story, "style": "manga_shonen"}, preferences)

    assert second.status == "completed", second.error
    assert len(calls) == segments  # not one more panel drawn
    assert [item["cached"] for item in second.data["rendered"]] == [True] * segments
    assert [item["sha256"] for item in second.data["rendered"]] == [item["sha256"] for item in first.data["rendered"]]


def test_a_previous_context_image_is_shown_in_the_first_panel_only(run_inline, user, project, story, media):
    folder = media / "projects" / "proj-001" / "refs"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64), (0, 0, 255)).save(folder / "last_page.png")
    data = {"text": story, "previous_context": "/projects/proj-001/refs/last_page.png"}

    run = start(run_inline, user, "comic_generation", data, {"segment_length": 60})

    assert run.status == "completed", run.error
    assert run.data["previous_context_used"]["kind"] == "project_image"
    assert run.data["previous_context_used"]["stored_as"] == f"projects/proj-001/images/{run.pk}/previous_context.png"
    first, second = (Image.open(media / name).convert("RGB") for name in run.data["outputs"]["panels"][:2])
    # The inset is a quarter of the panel wide, 16 pixels from the right edge, a sixth of the height down.
    assert first.getpixel((512 - 16 - 64, 512 // 6 + 64)) == (0, 0, 255)
    assert second.getpixel((512 - 16 - 64, 512 // 6 + 64)) != (0, 0, 255)
    assert run.data["panels"][0]["reference_sha256"] is not None
    assert run.data["panels"][1]["reference_sha256"] is None


def test_restore_drops_the_compression_entries_of_the_undone_steps(run_inline, user, project, story, media):
    run = start(run_inline, user, "text_compression", {"text": story}, {"target_ratio": 0.6})
    snapshots = list(run.snapshots.order_by("sequence"))
    # Snapshot 0 is the start; the one after plot_summarization has step_index 3.
    after_plot = next(index for index, snapshot in enumerate(snapshots) if snapshot.step_index == 3)

    restored = run_inline(engine.workflow_restore, workflow=run, index=after_plot, rerun=False, user=user)
    restored.refresh_from_db()
    assert [entry["step"] for entry in restored.compression_history] == ["plot_summarization"]

    rerun = run_inline(engine.workflow_restore, workflow=restored, index=-1, rerun=True, user=user)
    rerun.refresh_from_db()
    assert rerun.status == "completed"
    assert [entry["step"] for entry in rerun.compression_history] == ["plot_summarization", "compression_execution"]
