"""Panel images, behind one module: the offline Pillow renderer (default) or an OpenAI-style images API.

``image_provider()`` returns the one ``settings.MEMORY.providers.image`` names (``IMAGE_PROVIDER``,
``IMAGE_BASE_URL``, ``IMAGE_API_KEY``, ``IMAGE_MODEL``). Both return PNG bytes of the panel size.

- ``OfflineRenderer`` draws a real panel: the style's palette as background, a frame, the scene caption in a
  box, each character present as a figure in ITS remembered colours (hair, skin, clothing — the character
  record's, so the same person looks the same in every panel; the dominant colours of its reference images as
  swatches above its head), speech balloons with the dialogue, all text in
  the CJK font of ``pipelines.font_path`` (Pillow's default font, with a warning, if it is missing). The seed
  drives the only random choices (background details), so a panel is a pure function of its inputs.
- ``OpenAIImages`` calls ``images.generate`` of any OpenAI-compatible endpoint (OpenAI, Seedream on
  Volcengine Ark, a local server) with an explicit timeout and no hidden retries; the reference images of the
  characters present go as ``image`` (data URLs) when ``accepts_references`` is on, else the prompt describes
  them (their dominant colours); it accepts ``b64_json`` or
  ``url`` answers (a URL is downloaded through ``memory_app.safe_fetch``, the SSRF guard ``previous_context``
  uses too). The answer, and an image downloaded from its URL, are read up to ``max_answer_bytes`` (32 MiB by
  default) and refused past it, before anything is decoded. Timeouts, connection errors, 429 and 5xx, and an
  answer cut short or not JSON raise ``RetryableProviderError`` for the engine.

``page_compose`` lays panels out into pages (two columns).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import random
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from django.conf import settings
from PIL import Image, ImageDraw

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import PreviousContextRefused, ProviderError
from memory_app.providers.fonts import FontType, RendererIdentity, lettering_face, lettering_font_path
from memory_app.providers.openai_client import openai_client, openai_json_answer
from memory_app.providers.turns import provider_turn_end
from memory_app.safe_fetch import image_download

logger = logging.getLogger("workflows.providers.image")


@dataclass(frozen=True)
class PanelFigure:
    name: str
    colors: dict[str, str]
    # The dominant colours of the character's reference images: the offline renderer shows them as swatches
    # above the figure (it cannot paint from a picture); a provider that takes references gets the pictures.
    reference_colors: tuple[str, ...] = ()


@dataclass(frozen=True)
class PanelReference:
    """A character's reference image, sent to providers that accept references."""

    character: str
    sha256: str
    content_type: str
    data: bytes
    dominant_colors: tuple[str, ...] = ()

    def description(self) -> str:
        return f"reference image of {self.character}: dominant colours {', '.join(self.dominant_colors)}"


@dataclass(frozen=True)
class PanelRequest:
    """Everything a panel is made from; its cache key is built from exactly these fields."""

    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    caption: str = ""
    dialogue: tuple[tuple[str, str], ...] = ()
    figures: tuple[PanelFigure, ...] = ()
    palette: tuple[str, ...] = ("#FFFFFF",)
    reference_sha256: str | None = None
    # The previous_context image (first panel only). Not in the cache key: its checksum is.
    reference: bytes | None = None
    # The reference images of the characters present. Not in the cache key: their checksums are.
    character_references: tuple[PanelReference, ...] = ()
    # Caption box and speech balloons drawn over the panel, whatever the provider (``preferences.lettering``).
    lettering: bool = True

    def prompt_describing_references(self) -> str:
        """The prompt, plus what the character references show, for a provider that cannot take pictures."""
        notes = [reference.description() for reference in self.character_references]
        return ", ".join([self.prompt, *notes]) if notes else self.prompt

    def cache_key(self, provider: str, model: str | None, renderer: RendererIdentity) -> dict[str, Any]:
        """The cache key; ``renderer`` (the offline renderer's version and font file) is in it whatever the
        provider, so a panel lettered with another font, or none, is never served for this one."""
        return {
            "provider": provider,
            "model": model,
            "renderer": renderer.as_key(),
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "size": [self.width, self.height],
            "caption": self.caption,
            "dialogue": [list(line) for line in self.dialogue],
            "figures": [[figure.name, figure.colors, list(figure.reference_colors)] for figure in self.figures],
            "palette": list(self.palette),
            "reference": self.reference_sha256,
            "character_references": [reference.sha256 for reference in self.character_references],
            # Only when off, so the keys of lettered panels (the default) stay what they were.
            **({} if self.lettering else {"lettering": False}),
        }


class ImageProvider(Protocol):
    name: str
    model: str | None

    def generate(self, request: PanelRequest) -> bytes: ...


# --- fonts and text ----------------------------------------------------------------------------------------


def font(size: int) -> FontType:
    """The lettering font at ``size``: ``pipelines.font_path`` or the packaged Noto Sans CJK
    (``memory_app.providers.fonts``); Pillow's default font, with a warning, when neither is there."""
    path = lettering_font_path()
    return lettering_face(str(path) if path is not None else None, size)


# Punctuation a line never starts with (closing marks, pauses, stops): the character before it goes down too.
_NO_LINE_START = frozenset("，。！？：；、）」』”’…》〉】,.!?:;)")


def wrap(text: str, face: FontType, width: int) -> list[str]:
    """Break ``text`` into lines no wider than ``width`` pixels, character by character (CJK has no spaces); a
    line never starts with a closing mark or a stop (a full-width exclamation mark after 好久不见 goes down with 见)."""
    lines: list[str] = []
    current = ""
    for char in text.replace("\n", ""):
        if current and face.getlength(current + char) > width:
            if char in _NO_LINE_START and len(current) > 1:
                lines.append(current[:-1])
                current = current[-1] + char
            else:
                lines.append(current)
                current = char
        else:
            current += char
    if current:
        lines.append(current)
    return lines


def _rgb(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    if len(value) != 6:
        return (255, 255, 255)
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def _tint(color: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    red, green, blue = (round(channel + (255 - channel) * amount) for channel in color)
    return (red, green, blue)


# --- the offline renderer ----------------------------------------------------------------------------------


REFERENCE_LABEL = "前情"


class OfflineRenderer:
    name = "offline"
    model: str | None = "pillow-panel-v1"

    def generate(self, request: PanelRequest) -> bytes:
        drawn = self._draw(request)
        # The drawing is this provider's call: a second lane of this process may begin its panel now.
        provider_turn_end()
        return drawn

    def _draw(self, request: PanelRequest) -> bytes:
        width, height = request.width, request.height
        rng = random.Random(request.seed)
        palette = [_rgb(color) for color in request.palette] or [(255, 255, 255)]
        image = Image.new("RGB", (width, height), _tint(palette[0], 0.8))
        draw = ImageDraw.Draw(image)
        # Background details from the seed: a few soft shapes in the palette's other colours.
        for _ in range(6):
            x, y, radius = rng.randrange(width), rng.randrange(height // 3, height), rng.randrange(20, 80)
            color = _tint(palette[rng.randrange(len(palette))], 0.6)
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
        positions = figure_positions(len(request.figures), width)
        ground = height - 30
        for figure, x in zip(request.figures, positions, strict=True):
            self._draw_figure(draw, figure, x, ground, height)
        if request.lettering:
            letter(draw, request, positions)
        if request.reference is not None:
            self._draw_reference(image, request.reference, font(max(12, height // 28)))
        draw.rectangle((0, 0, width - 1, height - 1), outline=(0, 0, 0), width=6)
        output = io.BytesIO()
        image.save(output, format="PNG")
        return output.getvalue()

    @staticmethod
    def _draw_reference(image: Image.Image, reference: bytes, face: FontType) -> None:
        """The previous episode's image as a framed inset in the top-right corner, labelled 前情."""
        side = image.width // 4
        with Image.open(io.BytesIO(reference)) as source:
            inset = source.convert("RGB").resize((side, side))
        left, top = image.width - side - 16, image.height // 6
        image.paste(inset, (left, top))
        draw = ImageDraw.Draw(image)
        draw.rectangle((left - 2, top - 2, left + side + 1, top + side + 1), outline=(0, 0, 0), width=2)
        draw.text((left, top + side + 4), REFERENCE_LABEL, font=face, fill=(0, 0, 0))

    @staticmethod
    def lettering(request: PanelRequest) -> str:
        """Every character the panel letters: caption, balloons, names, and the inset's label."""
        parts = [lettered_text(request), *(figure.name for figure in request.figures)]
        if request.reference is not None:
            parts.append(REFERENCE_LABEL)
        return "".join(parts)

    @staticmethod
    def _draw_figure(draw: ImageDraw.ImageDraw, figure: PanelFigure, x: int, ground: int, height: int) -> None:
        scale = height / 512
        head = round(26 * scale)
        body_height = round(110 * scale)
        skin = _rgb(figure.colors.get("skin", "#F1C27D"))
        hair = _rgb(figure.colors.get("hair", "#222222"))
        clothing = _rgb(figure.colors.get("clothing", "#1B98E0"))
        body_top = ground - body_height
        draw.rectangle((x - head, body_top, x + head, ground - 20), fill=clothing, outline=(0, 0, 0), width=2)
        draw.line((x - head // 2, ground - 20, x - head // 2, ground), fill=(0, 0, 0), width=4)
        draw.line((x + head // 2, ground - 20, x + head // 2, ground), fill=(0, 0, 0), width=4)
        head_center = body_top - head
        draw.ellipse((x - head, head_center - head, x + head, head_center + head), fill=skin, outline=(0, 0, 0))
        draw.chord((x - head, head_center - head, x + head, head_center + head), 180, 360, fill=hair)
        swatch = max(6, round(12 * scale))
        for number, color in enumerate(figure.reference_colors[:4]):
            left = x - 2 * swatch + number * swatch
            top = head_center - head - swatch - 4
            draw.rectangle((left, top, left + swatch - 1, top + swatch - 1), fill=_rgb(color))
        # The name centred under the feet, its baseline clear of the panel's 6-pixel border.
        label = font(max(10, round(16 * scale)))
        draw.text((x, height - max(10, round(11 * scale))), figure.name, font=label, fill=(0, 0, 0), anchor="ms")


# --- lettering: caption and balloons, over any provider's panel ---------------------------------------------


def figure_positions(count: int, width: int) -> list[int]:
    """Where the offline renderer stands each figure (x of its centre), evenly across the panel."""
    return [round(width * (index + 1) / (count + 1)) for index in range(count)]


def lettered_text(request: PanelRequest) -> str:
    """The text ``letter`` draws for ``request``: its caption and up to three balloons (none when off)."""
    if not request.lettering:
        return ""
    return "".join([request.caption, *(line for _speaker, line in request.dialogue[:3])])


def letter(draw: ImageDraw.ImageDraw, request: PanelRequest, positions: list[int]) -> None:
    """The caption in a box at the top and up to three speech balloons, each with a tail towards its speaker's
    position (none for the narrator), in the lettering font: what the offline renderer draws, over any panel."""
    width, height = request.width, request.height
    caption_face = font(max(12, height // 28))
    caption_lines = wrap(request.caption, caption_face, width - 40)[:3]
    if caption_lines:
        line_height = caption_face.size + 4 if hasattr(caption_face, "size") else 16
        box_height = 12 + line_height * len(caption_lines)
        draw.rectangle((10, 10, width - 10, 10 + box_height), fill=(255, 250, 220), outline=(0, 0, 0), width=2)
        for number, line in enumerate(caption_lines):
            draw.text((20, 16 + number * line_height), line, font=caption_face, fill=(0, 0, 0))
    balloon_face = font(max(12, height // 26))
    speakers = {figure.name: x for figure, x in zip(request.figures, positions, strict=True)}
    top = height // 4
    for speaker, line in request.dialogue[:3]:
        top = _draw_balloon(draw, balloon_face, line, speakers.get(speaker), top, width, height)


def lettering_layer(request: PanelRequest) -> Image.Image | None:
    """The caption and balloons of ``request`` (``letter``) on a transparent layer of the panel's size; None when
    there is nothing to letter.

    Pasted over a picture with its own alpha as the mask, it gives the very pixels ``letter`` draws on that picture:
    the boxes, balloons and tails are opaque, and the text's antialiased edges blend its black ink over whatever is
    beneath by the same weights (``tests/workflows/providers/test_image.py`` compares both on a noisy picture). So
    the layer can be drawn before the picture exists."""
    if not lettered_text(request):
        return None
    layer = Image.new("RGBA", (request.width, request.height), (0, 0, 0, 0))
    letter(ImageDraw.Draw(layer), request, figure_positions(len(request.figures), request.width))
    return layer


class _LetteringInBackground:
    """``lettering_layer(request)`` drawn by a helper thread while this one waits for the provider's picture: the
    ~3 ms of drawing then costs nothing after the answer, when every worker of a fan-out round wants the CPU at
    once. The fonts are used by the helper alone until ``layer()`` has joined it."""

    def __init__(self, request: PanelRequest) -> None:
        self._request = request
        self._layer: Image.Image | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._draw, name="panel-lettering", daemon=True)
        self._thread.start()

    def _draw(self) -> None:
        try:
            self._layer = lettering_layer(self._request)
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread by layer()
            self._error = exc

    def layer(self) -> Image.Image | None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._layer

    def abandon(self) -> None:
        """The picture failed: wait for the helper (it is not left drawing), keep the picture's error."""
        self._thread.join()


# How the PNGs written here (a provider's panel lettered or converted) are compressed: zlib's run-length strategy,
# made for PNG's filtered rows, encodes a picture three times as fast as Pillow's default (level 6, default
# strategy) for the same size (a 512x512 illustration: 14 ms against 42 ms, 442 KiB both; a flat panel lettered:
# 3.2 ms against 4.9 ms, 24 KiB against 22 KiB). The encoding runs on the critical path of every panel.
PANEL_PNG_OPTIONS: dict[str, Any] = {"compress_level": 1, "compress_type": zlib.Z_RLE}


def _png(image: Image.Image) -> bytes:
    output = io.BytesIO()
    image.save(output, format="PNG", **PANEL_PNG_OPTIONS)
    return output.getvalue()


def _draw_balloon(
    draw: ImageDraw.ImageDraw, face: FontType, text: str, speaker_x: int | None, top: int, width: int, height: int
) -> int:
    lines = wrap(text, face, width // 2)[:3]
    line_height = getattr(face, "size", 12) + 4
    box_width = max(face.getlength(line) for line in lines) + 24 if lines else 40
    box_height = line_height * len(lines) + 16
    center = speaker_x if speaker_x is not None else width // 2
    left = min(max(12, center - box_width / 2), width - 12 - box_width)
    bottom = min(top + box_height, height - 160)
    top = bottom - box_height
    # Colours as RGB triples, never a bare 0: on the transparent layer (``lettering_layer``) 0 is transparent.
    draw.rounded_rectangle((left, top, left + box_width, bottom), radius=14, fill=(255, 255, 255), outline=(0, 0, 0))
    if speaker_x is not None:
        draw.polygon([(center - 8, bottom), (center + 8, bottom), (center, bottom + 18)], fill=(255, 255, 255))
        draw.line([(center - 8, bottom), (center, bottom + 18), (center + 8, bottom)], fill=(0, 0, 0), width=1)
    for number, line in enumerate(lines):
        draw.text((left + 12, top + 8 + number * line_height), line, font=face, fill=(0, 0, 0))
    return bottom + 10


# --- OpenAI-compatible images ------------------------------------------------------------------------------


class OpenAIImages:
    name = "openai"

    def __init__(self, config: ProviderConfig) -> None:

        if not config.model:
            raise ProviderError(
                "No image model is configured (memory.providers.image.model or IMAGE_MODEL).",
                details={"provider": self.name},
            )
        if not config.base_url:
            # Never the client library's default (the public OpenAI endpoint): see providers.settings_check.
            raise ProviderError(
                "No image base URL is configured (memory.providers.image.base_url or IMAGE_BASE_URL, including /v1).",
                details={"provider": self.name},
            )
        self.model: str | None = config.model
        self.max_answer_bytes = config.max_answer_bytes
        self.accepts_references = config.accepts_references
        # The provider's own host may be private (a LAN or loopback server answering with URLs on itself).
        own_host = urlsplit(config.base_url or "").hostname
        self.allowed_hosts = frozenset([*config.allowed_hosts, *([own_host.lower()] if own_host else [])])
        # One client per endpoint and process, shared by every panel.
        self._client = openai_client(
            base_url=config.base_url, api_key=config.api_key or "not-needed", timeout_seconds=config.timeout_seconds
        )

    def generate(self, request: PanelRequest) -> bytes:
        details = {"provider": self.name, "model": self.model}
        # Not in OpenAI's own schema, understood by Seedream and most open servers.
        extra: dict[str, Any] = {"seed": request.seed, "negative_prompt": request.negative_prompt, "watermark": False}
        prompt = request.prompt
        if request.character_references and self.accepts_references:
            extra["image"] = [
                f"data:{reference.content_type};base64,{base64.b64encode(reference.data).decode()}"
                for reference in request.character_references
            ]
        elif request.character_references:
            prompt = request.prompt_describing_references()
        # The provider draws the picture; the words are ours, in the lettering font (image models misspell text),
        # drawn while the provider works.
        lettering = _LetteringInBackground(request) if lettered_text(request) else None
        try:
            raw = self._answer_image(request, prompt, extra, details)
            # The answer is in: a second lane of this process may begin its panel (``provider_turn_end``).
            provider_turn_end()
        except BaseException:
            if lettering is not None:
                lettering.abandon()
            raise
        layer = lettering.layer() if lettering is not None else None
        return _as_png(raw, request.width, request.height, details, layer=layer)

    def _answer_image(
        self, request: PanelRequest, prompt: str, extra: dict[str, Any], details: dict[str, Any]
    ) -> bytes:
        """The image bytes of the provider's answer (``b64_json``, or downloaded from its ``url``)."""
        answer = openai_json_answer(
            send=lambda: self._client.images.with_streaming_response.generate(
                model=self.model or "",
                prompt=prompt,
                size=f"{request.width}x{request.height}",
                n=1,
                response_format="b64_json",
                extra_body=extra,
            ),
            label="image",
            details=details,
            max_bytes=self.max_answer_bytes,
        )
        data = answer.get("data")
        item = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
        if item is None:
            raise ProviderError("The image provider returned no image.", details=details)
        encoded, url = item.get("b64_json"), item.get("url")
        if encoded and isinstance(encoded, str):
            try:
                raw = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise ProviderError("The image provider's base64 is not valid.", details=details) from None
        elif url and isinstance(url, str):
            try:
                raw = image_download(url=url, max_bytes=self.max_answer_bytes, allowed_hosts=self.allowed_hosts)
            except PreviousContextRefused as exc:
                raise ProviderError(f"The image URL was refused: {exc.message}", details=details) from None
        else:
            raise ProviderError("The image provider returned neither b64_json nor url.", details=details)
        return raw


def _as_png(raw: bytes, width: int, height: int, details: dict[str, Any], layer: Image.Image | None = None) -> bytes:
    """Whatever format the provider sent, the panel is stored as an RGB PNG of the panel size, with ``layer`` (the
    lettering, ``lettering_layer``) pasted over it.

    An answer that already is one, with nothing to letter, is kept as it came, once every chunk's CRC and the end of
    the stream are verified (a truncated or damaged transfer is refused): decoding its pixels would cost
    milliseconds of CPU per panel (1.8 ms at 512x512, 13 ms for a noisy 1024x1024; the check takes 0.03 and 0.8)
    and compressing it again would change nothing. Any other answer is decoded, converted and lettered, and
    encoded once.
    """
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.format == "PNG" and image.mode == "RGB" and image.size == (width, height):
                image.verify()
                if layer is None:
                    return raw
                # A verified image cannot be loaded: open the same bytes again to decode them.
                with Image.open(io.BytesIO(raw)) as verified:
                    panel = verified.convert("RGB")
            else:
                panel = image.convert("RGB")
                if panel.size != (width, height):
                    panel = panel.resize((width, height))
    except (OSError, ValueError, SyntaxError):
        # Pillow reports a PNG chunk whose CRC does not match as a SyntaxError.
        raise ProviderError("The image provider's answer is not an image.", details=details) from None
    if layer is not None:
        panel.paste(layer, (0, 0), layer)
    return _png(panel)


def image_provider(config: ProviderConfig | None = None) -> ImageProvider:
    config = config or settings.MEMORY.providers.image
    if config.provider == "openai":
        return OpenAIImages(config)
    return OfflineRenderer()


# --- pages -------------------------------------------------------------------------------------------------


def page_compose(panels: list[bytes], *, title: str, page_number: int, columns: int = 2) -> bytes:
    """One page: the panels in reading order on a grid, a margin, the title and page number at the bottom."""
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in panels]
    width, height = images[0].size
    rows = math.ceil(len(images) / columns)
    margin, footer = 20, 40
    page = Image.new(
        "RGB", (columns * width + (columns + 1) * margin, rows * height + (rows + 1) * margin + footer), "white"
    )
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        page.paste(image, (margin + column * (width + margin), margin + row * (height + margin)))
    draw = ImageDraw.Draw(page)
    face = font(18)
    label = f"{title} · {page_number}"
    draw.text(((page.width - face.getlength(label)) / 2, page.height - footer + 8), label, font=face, fill=0)
    output = io.BytesIO()
    page.save(output, format="PNG")
    return output.getvalue()
