"""Character reference images reach the image provider: as pictures where it takes them, described otherwise."""

from __future__ import annotations

import base64
import io

from PIL import Image

from comicmem_site.memory_config import ProviderConfig
from tests.workflows.providers.test_image import RED_JACKET, png_b64, request
from workflows.providers.image import OfflineRenderer, OpenAIImages, PanelFigure, PanelReference


def png(color: str) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(output, format="PNG")
    return output.getvalue()


REFERENCE = PanelReference(
    character="小明", sha256="ab" * 32, content_type="image/png", data=png("#00AA55"), dominant_colors=("#00AA55",)
)


def test_the_offline_renderer_shows_reference_colours_above_the_figure():
    plain = request(palette=("#FFFFFF",))
    with_reference = request(
        palette=("#FFFFFF",), figures=(PanelFigure("小明", RED_JACKET, reference_colors=("#00AA55", "#3322CC")),)
    )

    before = Image.open(io.BytesIO(OfflineRenderer().generate(plain))).convert("RGB")
    after = Image.open(io.BytesIO(OfflineRenderer().generate(with_reference))).convert("RGB")

    # 256-pixel panel: the figure stands at x=128; head centre 256-30-55-13=158, radius 13; swatches of 6 px above.
    swatch_row = 158 - 13 - 6 - 4 + 2
    assert after.getpixel((128 - 12 + 2, swatch_row)) == (0x00, 0xAA, 0x55)
    assert after.getpixel((128 - 6 + 2, swatch_row)) == (0x33, 0x22, 0xCC)
    assert before.getpixel((128 - 12 + 2, swatch_row)) != (0x00, 0xAA, 0x55)
    # A different reference is a different panel, and a different cache key.
    assert plain.cache_key("offline", None, _identity()) != with_reference.cache_key("offline", None, _identity())


def _identity():
    from memory_app.providers.fonts import renderer_identity

    return renderer_identity()


def images_client(fake_openai, **extra) -> OpenAIImages:
    return OpenAIImages(
        ProviderConfig(
            provider="openai",
            base_url=fake_openai.base_url,
            api_key="sk-img",
            model="seedream",
            timeout_seconds=1.0,
            **extra,
        )
    )


def test_a_provider_that_takes_references_gets_the_pictures(fake_openai):
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": png_b64("blue")}]}))

    images_client(fake_openai).generate(request(prompt="小明在村口", character_references=(REFERENCE,)))

    sent = fake_openai.requests[-1].body
    assert sent["prompt"] == "小明在村口"
    assert sent["image"] == [f"data:image/png;base64,{base64.b64encode(REFERENCE.data).decode()}"]


def test_a_provider_without_references_gets_them_described_in_the_prompt(fake_openai):
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": png_b64("blue")}]}))

    images_client(fake_openai, accepts_references=False).generate(
        request(prompt="小明在村口", character_references=(REFERENCE,))
    )

    sent = fake_openai.requests[-1].body
    assert "image" not in sent
    assert sent["prompt"] == "小明在村口, reference image of 小明: dominant colours #00AA55"


def test_a_panel_without_references_sends_no_image_field(fake_openai):
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": png_b64("blue")}]}))

    images_client(fake_openai).generate(request(prompt="村口"))

    assert "image" not in fake_openai.requests[-1].body
