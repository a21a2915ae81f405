"""The panels' lettering font in comic runs: part of every image cache key; quality control fails boxes."""

from __future__ import annotations

import pytest

from memory_app.providers import fonts
from tests.workflows.real_pipelines.test_runs_inline import start

pytestmark = pytest.mark.django_db

PREFERENCES = {"segment_length": 60, "panels_per_page": 2}


def use_font_path(settings, path: str | None) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"pipelines": settings.MEMORY.pipelines.model_copy(update={"font_path": path})}
    )


def test_another_font_file_is_another_image_key_so_nothing_stale_is_served(
    run_inline, user, project, story, media, settings, tmp_path
):
    data = {"text": story, "style": "manga_shonen"}
    first = start(run_inline, user, "comic_generation", data, PREFERENCES)
    assert first.status == "completed", first.error
    # The same glyphs in another file (one byte more): another renderer identity.
    other = tmp_path / "other.otf"
    other.write_bytes(fonts.packaged_font_path().read_bytes() + b"\0")
    use_font_path(settings, str(other))

    second = start(run_inline, user, "comic_generation", data, PREFERENCES)

    assert second.status == "completed", second.error
    assert [item["cached"] for item in second.data["rendered"]] == [False] * len(first.data["rendered"])


def test_quality_control_fails_panels_lettered_with_missing_glyphs(
    run_inline, user, project, story, media, monkeypatch
):
    # No lettering font at all: Pillow's default font, which has no Chinese glyph.
    monkeypatch.setattr(fonts, "FONT_PACKAGE", "comicmem_no_such_font_package")
    fonts.lettering_face.cache_clear()

    run = start(run_inline, user, "comic_generation", {"text": story, "style": "manga_shonen"}, PREFERENCES)
    fonts.lettering_face.cache_clear()

    assert run.status == "failed"
    assert run.current_step == "quality_control"
    assert run.error["type"] == "ProviderError"
    message = run.error["message"]
    assert message.startswith("The lettering font has no glyph for '小明")
    assert message.endswith("panel_001.png, panel_002.png, panel_003.png would show boxes.")
