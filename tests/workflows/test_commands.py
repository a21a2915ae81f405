"""generate_comic and compress_text: a run through the engine, a progress bar, outputs, a non-zero exit on failure."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from memory_app.models import WorkflowState
from workflows.cli import progress_bar

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "story_zh.txt"


def test_progress_bar_shows_steps_and_segments():
    progress = {"current": 4, "total": 6, "percent": 75.0, "total_segments": 10, "completed_segments": 5}

    assert progress_bar(progress, "image_generation") == "[#######   ]  75% step 5/6 image_generation segment 5/10"
    assert progress_bar({"current": 6, "total": 6, "percent": 100.0}, "") == "[##########] 100% step 6/6"


@pytest.fixture
def previous_eager():
    from comicmem_site.celery import app

    previous = app.conf.task_always_eager
    yield
    app.conf.task_always_eager = previous


@pytest.mark.django_db(transaction=True)
def test_generate_comic_inline_prints_the_pages(user, project, media, manga_shonen, previous_eager, tmp_path):
    story = tmp_path / "story.txt"
    story.write_text("\n".join(SAMPLE.read_text(encoding="utf-8").splitlines()[:4]), encoding="utf-8")
    out = io.StringIO()

    call_command(
        "generate_comic",
        str(story),
        "--project",
        "proj-001",
        "--style",
        "manga_shonen",
        "--inline",
        "--poll",
        "0.05",
        stdout=out,
    )

    run = WorkflowState.objects.get(workflow_type="comic_generation")
    assert run.status == "completed"
    text = out.getvalue()
    assert "Running the steps in this process (--inline)" in text
    assert "[##########] 100% step 6/6" in text
    pages = run.data["outputs"]["pages"]
    assert text.strip().endswith(str(media / pages[-1]))
    assert all((media / name).is_file() for name in pages)


@pytest.mark.django_db(transaction=True)
def test_compress_text_inline_writes_the_result(user, project, media, previous_eager, tmp_path):
    output = tmp_path / "short.txt"
    out = io.StringIO()

    call_command(
        "compress_text",
        str(SAMPLE),
        "--project",
        "proj-001",
        "--ratio",
        "0.5",
        "--inline",
        "--output",
        str(output),
        "--poll",
        "0.05",
        stdout=out,
    )

    run = WorkflowState.objects.get(workflow_type="text_compression")
    assert output.read_text(encoding="utf-8") == run.data["compressed_text"]
    assert "characters kept: 小明, 老王, 王伯" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_bad_input_exits_non_zero_and_starts_nothing(user, project, media, previous_eager, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   ", encoding="utf-8")

    with pytest.raises(CommandError, match="VALIDATION_ERROR"):
        call_command("compress_text", str(empty), "--project", "proj-001", stdout=io.StringIO())

    with pytest.raises(CommandError, match="VALIDATION_ERROR: Unknown style 'nope'"):
        call_command("generate_comic", str(SAMPLE), "--project", "proj-001", "--style", "nope", stdout=io.StringIO())
    assert WorkflowState.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_exits_non_zero(
    user, project, media, manga_shonen, previous_eager, tmp_path, settings, fake_openai
):
    from comicmem_site.memory_config import ProviderConfig

    fake_openai.route("/v1/images/generations", lambda body: (400, {"error": {"message": "bad prompt"}}))
    providers = settings.MEMORY.providers.model_copy(
        update={"image": ProviderConfig(provider="openai", base_url=fake_openai.base_url, model="m", timeout_seconds=2)}
    )
    settings.MEMORY = settings.MEMORY.model_copy(update={"providers": providers})
    story = tmp_path / "story.txt"
    story.write_text("小明走进村口。老王在抽烟。小明笑了。老王也笑了。", encoding="utf-8")

    with pytest.raises(CommandError, match="failed: ProviderError The image provider answered HTTP 400"):
        call_command(
            "generate_comic", str(story), "--project", "proj-001", "--inline", "--poll", "0.05", stdout=io.StringIO()
        )

    assert WorkflowState.objects.get().status == "failed"


@pytest.mark.django_db
def test_the_project_option_names_the_users_own_project_when_two_owners_have_the_id(user, other_user):
    from memory_app.services.projects import project_create
    from workflows.cli import project_for

    alices = project_create(owner=user, project_id="alpha", name="Alice's")
    bobs = project_create(owner=other_user, project_id="alpha", name="Bob's")
    solo = project_create(owner=user, project_id="solo", name="Only Alice's")

    assert project_for({"project": "alpha", "user": "bob"}) == bobs
    assert project_for({"project": "alpha", "user": "alice"}) == alices
    assert project_for({"project": "solo", "user": "bob"}) == solo  # the only one of that id, whoever owns it
    with pytest.raises(CommandError, match=r"Several owners have a project 'alpha' \(alice, bob\).*pass --user"):
        project_for({"project": "alpha", "user": "demo"})
    assert list(user.projects.order_by("public_id").values_list("public_id", flat=True)) == ["alpha", "solo"]
    assert list(other_user.projects.values_list("public_id", flat=True)) == ["alpha"]
