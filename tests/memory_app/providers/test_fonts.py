"""The lettering font: shipped in a Python package, found without system fonts, hashed into the renderer's
identity; missing glyphs found per character."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from PIL import ImageFont

from memory_app.providers import fonts


@pytest.fixture
def no_packaged_font(monkeypatch) -> None:
    """As on a machine where the font package is not installed."""
    monkeypatch.setattr(fonts, "FONT_PACKAGE", "comicmem_no_such_font_package")


def use_font_path(settings, path: str | None) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"pipelines": settings.MEMORY.pipelines.model_copy(update={"font_path": path})}
    )


def test_the_font_is_found_in_its_python_package():
    import cvttf_NotoSansCJK_Regular

    path = fonts.lettering_font_path()

    assert path is not None
    assert path.parent == Path(cvttf_NotoSansCJK_Regular.__file__).parent
    assert path.name == "NotoSansCJKtc-Regular.otf"


def test_a_configured_path_overrides_the_packaged_font(settings, tmp_path):
    copy = tmp_path / "font.otf"
    shutil.copyfile(fonts.packaged_font_path(), copy)
    use_font_path(settings, str(copy))

    assert fonts.lettering_font_path() == copy


def test_the_renderer_identity_is_its_version_and_the_font_files_sha256(settings, tmp_path):
    packaged = fonts.packaged_font_path()
    identity = fonts.renderer_identity()

    assert identity.version == fonts.RENDERER_VERSION
    assert identity.font_sha256 == hashlib.sha256(packaged.read_bytes()).hexdigest()
    # Another font file (here: the same one, one byte longer) is another identity.
    other = tmp_path / "other.otf"
    other.write_bytes(packaged.read_bytes() + b"\0")
    use_font_path(settings, str(other))
    assert fonts.renderer_identity().font_sha256 == hashlib.sha256(other.read_bytes()).hexdigest()
    assert fonts.renderer_identity() != identity


def test_the_packaged_font_has_every_glyph_of_chinese_lettering():
    assert fonts.glyphs_missing("小明背着书包走进村口，老王说：“走，去河边钓鱼！” OK 123") == ""  # noqa: RUF001


def test_characters_without_a_glyph_are_named_once_each_in_order():
    face = fonts.lettering_face(str(fonts.packaged_font_path()), 32)

    # A private-use character and an emoji: Noto Sans CJK maps neither.
    assert fonts.glyphs_missing("小\ue000明\U0001f600\ue000", face) == "\ue000\U0001f600"


def test_pillows_default_font_misses_chinese_but_not_latin_or_spaces():
    face = ImageFont.load_default(size=32)

    assert fonts.glyphs_missing("Hi 小明，\u3000ok", face) == "小明，"  # noqa: RUF001


def test_the_report_names_path_checksum_and_coverage():
    report = fonts.font_report()

    assert report.ok
    assert report.path == str(fonts.packaged_font_path())
    assert report.sha256 == fonts.renderer_identity().font_sha256
    assert report.message.endswith("covers the CJK sample.")
    assert f"sha256 {report.sha256[:12]}" in report.message


def test_without_the_package_the_report_says_so_and_the_identity_has_no_font(no_packaged_font):
    report = fonts.font_report()

    assert not report.ok
    assert report.path is None
    assert "is not installed" in report.message
    assert fonts.renderer_identity().font_sha256 is None


def latin_font_file(folder: Path) -> Path:
    """Pillow's own default font (Latin only) as a file."""
    path = folder / "latin.ttf"
    path.write_bytes(ImageFont.load_default(size=20).font_bytes)
    return path


def test_a_font_without_cjk_glyphs_is_reported_uncovered(settings, tmp_path):
    use_font_path(settings, str(latin_font_file(tmp_path)))

    report = fonts.font_report()

    assert not report.ok
    assert report.path == str(tmp_path / "latin.ttf")
    assert "has no glyph for '小明背着书包走进村口" in report.message
