"""The panels' lettering font and the offline renderer's identity.

The font is Noto Sans CJK (SIL Open Font License), shipped in the Python package ``cvttf-notosanscjk-regular``
that ``requirements.txt`` installs: it is found through the package, never among system fonts, so a fresh machine
letters Chinese without any system package. ``pipelines.font_path`` overrides it (a path that does not exist
stops start-up, see ``comicmem_site.memory_config``).

- ``lettering_font_path()``: the configured font, else the packaged one, else None (the package is not installed:
  the renderer falls back to Pillow's default font, which has no CJK glyph; health and ``diagnose`` say so and
  quality control fails the panels).
- ``renderer_identity()``: the renderer's version and the sha256 of the font file (hashed once per process), part
  of every image cache key, so a panel drawn with another font (or none) is never served for this one.
- ``glyphs_missing(text, face)``: the characters of ``text`` the face draws as its ``.notdef`` glyph (a box or
  nothing), found by comparing each character's rendering with that of a code point no font maps.
- ``font_report()``: what health and ``diagnose`` print: path, sha256 prefix, whether a CJK sample is covered.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from django.conf import settings
from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger("memory_app.providers.fonts")

FontType = ImageFont.FreeTypeFont | ImageFont.ImageFont

FONT_PACKAGE = "cvttf_NotoSansCJK_Regular"
FONT_FILE = "NotoSansCJKtc-Regular.otf"
# Changes whenever the offline renderer draws the same inputs differently: older cached panels stop matching.
RENDERER_VERSION = "pillow-panel-3"
# Checked by health and diagnose: characters the panels letter all the time (the inset's label 前情 among them).
CJK_SAMPLE = "小明背着书包走进村口\uff0c前情\u3002"  # with a full-width comma and full stop
# A code point no font maps (a noncharacter): it always draws as the face's .notdef glyph.
_UNMAPPED = "\U0010fffe"
_CHECK_SIZE = 32
# Spaces, line and paragraph separators, controls and format characters: nothing to draw, nothing missing.
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def packaged_font_path() -> Path | None:
    """The font file shipped in the Python package, or None when the package is not installed."""
    try:
        folder = resources.files(FONT_PACKAGE)
    except ModuleNotFoundError:
        return None
    path = Path(str(folder.joinpath(FONT_FILE)))
    return path if path.is_file() else None


def lettering_font_path() -> Path | None:
    """``pipelines.font_path`` when set, else the packaged font; None when neither is there."""
    configured = settings.MEMORY.pipelines.font_path
    if configured:
        path = Path(configured)
        return path if path.is_file() else None
    return packaged_font_path()


@lru_cache(maxsize=4)
def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RendererIdentity:
    version: str
    font_sha256: str | None  # None: no font file, Pillow's default font

    def as_key(self) -> dict[str, str | None]:
        return {"version": self.version, "font_sha256": self.font_sha256}


def renderer_identity() -> RendererIdentity:
    path = lettering_font_path()
    return RendererIdentity(RENDERER_VERSION, _file_sha256(str(path)) if path is not None else None)


@lru_cache(maxsize=16)
def lettering_face(path: str | None, size: int) -> FontType:
    """The face of ``path`` at ``size``; Pillow's default font (no CJK glyphs), with a warning, when None."""
    if path is not None:
        return ImageFont.truetype(path, size)
    logger.warning("no lettering font (package %s missing): panels use Pillow's default font", FONT_PACKAGE)
    return ImageFont.load_default(size=size)


def _drawn(face: FontType, char: str) -> tuple[tuple[int, int], bytes]:
    left, top, right, bottom = (round(value) for value in face.getbbox(char))
    image = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(image).text((-left, -top), char, font=face, fill=255)
    return image.size, image.tobytes()


@lru_cache(maxsize=16)
def _notdef(face: FontType) -> tuple[tuple[int, int], bytes]:
    return _drawn(face, _UNMAPPED)


@lru_cache(maxsize=8192)
def _has_glyph(face: FontType, char: str) -> bool:
    if unicodedata.category(char) in _INVISIBLE:
        return True
    return _drawn(face, char) != _notdef(face)


def glyphs_missing(text: str, face: FontType | None = None) -> str:
    """The distinct characters of ``text`` (in order) that ``face`` (default: the lettering font) has no glyph for."""
    if face is None:
        path = lettering_font_path()
        face = lettering_face(str(path) if path is not None else None, _CHECK_SIZE)
    return "".join(dict.fromkeys(char for char in text if not _has_glyph(face, char)))


@dataclass(frozen=True)
class FontReport:
    path: str | None
    sha256: str | None
    missing: str  # characters of CJK_SAMPLE without a glyph

    @property
    def ok(self) -> bool:
        return self.path is not None and not self.missing

    @property
    def message(self) -> str:
        if self.path is None:
            return f"no lettering font: package {FONT_PACKAGE} is not installed; Chinese panels draw boxes."
        where = f"{self.path} (sha256 {(self.sha256 or '')[:12]})"
        if self.missing:
            return f"{where} has no glyph for {self.missing!r}: Chinese panels draw boxes."
        return f"{where} covers the CJK sample."


def font_report() -> FontReport:
    path = lettering_font_path()
    if path is None:
        return FontReport(path=None, sha256=None, missing=CJK_SAMPLE)
    return FontReport(path=str(path), sha256=_file_sha256(str(path)), missing=glyphs_missing(CJK_SAMPLE))
