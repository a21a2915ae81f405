"""The image providers: the offline Pillow renderer, the OpenAI-style images client over real HTTP, pages."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import ProviderError, RetryableProviderError
from tests.conftest import service_unavailable
from workflows.providers.image import (
    OfflineRenderer,
    OpenAIImages,
    PanelFigure,
    PanelRequest,
    page_compose,
)

RED_JACKET = {"hair": "#222222", "clothing": "#D7263D", "skin": "#F1C27D"}


def request(**overrides) -> PanelRequest:
    values = {
        "prompt": "p",
        "negative_prompt": "n",
        "seed": 7,
        "width": 256,
        "height": 256,
        "caption": "",
        "figures": (PanelFigure("小明", RED_JACKET),),
        "palette": ("#FF6B6B",),
    }
    values.update(overrides)
    return PanelRequest(**values)


def dark_pixels(image: Image.Image) -> int:
    return image.convert("L").point(lambda value: 255 if value < 70 else 0).histogram()[255]


def pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_a_panel_is_a_png_of_the_size_and_a_pure_function_of_its_inputs():
    first = OfflineRenderer().generate(request())

    image = pixels(first)
    assert image.size == (256, 256)
    assert OfflineRenderer().generate(request()) == first
    assert OfflineRenderer().generate(request(seed=8)) != first


def test_a_character_is_drawn_in_its_remembered_colours():
    image = pixels(OfflineRenderer().generate(request(palette=("#FFFFFF",))))

    # The one figure stands at the middle; its body (clothing) is below the head.
    body = image.getpixel((128, 256 - 30 - 30))
    assert body == (0xD7, 0x26, 0x3D)


def test_cjk_text_is_drawn_with_the_font(settings):
    if not Path(settings.MEMORY.pipelines.font_path).is_file():
        service_unavailable(f"the CJK font {settings.MEMORY.pipelines.font_path} is not installed (make sysdeps)")
    blank = pixels(OfflineRenderer().generate(request(figures=(), caption="")))
    captioned = pixels(OfflineRenderer().generate(request(figures=(), caption="小明背着书包走进村口")))

    box = (14, 14, 200, 30)
    assert dark_pixels(blank.crop(box)) == 0
    assert dark_pixels(captioned.crop(box)) > 100


def test_a_missing_font_falls_back_with_a_warning(settings, caplog, monkeypatch):
    monkeypatch.setattr("workflows.providers.image.KNOWN_CJK_FONTS", ())
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"pipelines": settings.MEMORY.pipelines.model_copy(update={"font_path": "/nonexistent/font.ttc"})}
    )

    data = OfflineRenderer().generate(request(caption="hello"))

    assert pixels(data).size == (256, 256)
    assert "CJK font /nonexistent/font.ttc is missing" in caplog.text


def test_pages_lay_panels_out_two_by_two():
    panels = [OfflineRenderer().generate(request(seed=seed)) for seed in range(3)]

    page = pixels(page_compose(panels, title="t", page_number=1))

    assert page.size == (2 * 256 + 3 * 20, 2 * 256 + 3 * 20 + 40)
    assert page.crop((20, 20, 276, 276)).tobytes() == pixels(panels[0]).tobytes()
    assert page.crop((296, 20, 552, 276)).tobytes() == pixels(panels[1]).tobytes()


def png_b64(color: str, size=(64, 64)) -> str:
    output = io.BytesIO()
    Image.new("RGB", size, color).save(output, format="PNG")
    return base64.b64encode(output.getvalue()).decode()


@pytest.fixture
def images_client(fake_openai) -> OpenAIImages:
    return OpenAIImages(
        ProviderConfig(
            provider="openai", base_url=fake_openai.base_url, api_key="sk-img", model="seedream", timeout_seconds=1.0
        )
    )


def test_openai_images_b64_answer_is_a_panel_png(fake_openai, images_client):
    fake_openai.route(
        "/v1/images/generations", lambda body: (200, {"created": 1, "data": [{"b64_json": png_b64("blue")}]})
    )

    data = images_client.generate(request(prompt="小明在村口", seed=42))

    image = pixels(data)
    assert image.size == (256, 256)
    assert image.getpixel((10, 10)) == (0, 0, 255)
    sent = fake_openai.requests[-1]
    assert sent.path == "/v1/images/generations"
    assert sent.headers["authorization"] == "Bearer sk-img"
    assert (sent.body["model"], sent.body["prompt"], sent.body["size"], sent.body["seed"]) == (
        "seedream",
        "小明在村口",
        "256x256",
        42,
    )
    assert sent.body["negative_prompt"] == "n"


def test_openai_images_answer_already_a_panel_png_is_kept_byte_for_byte(fake_openai, images_client):
    answer = png_b64("green", size=(256, 256))
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": answer}]}))

    data = images_client.generate(request())

    assert data == base64.b64decode(answer)


@pytest.mark.parametrize(
    ("image_format", "mode", "size"),
    [("JPEG", "RGB", (256, 256)), ("PNG", "RGBA", (256, 256)), ("PNG", "RGB", (64, 64))],
)
def test_openai_images_other_answers_become_an_rgb_png_of_the_panel_size(
    fake_openai, images_client, image_format, mode, size
):
    output = io.BytesIO()
    Image.new(mode, size, "green").save(output, format=image_format)
    answer = base64.b64encode(output.getvalue()).decode()
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": answer}]}))

    data = images_client.generate(request())

    assert data != base64.b64decode(answer)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (256, 256))
        assert image.getpixel((128, 128))[1] > 100


def test_openai_images_truncated_png_is_refused(fake_openai, images_client):
    output = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(output, format="PNG")
    answer = base64.b64encode(output.getvalue()[:-200]).decode()
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": answer}]}))

    with pytest.raises(ProviderError) as raised:
        images_client.generate(request())

    assert raised.value.message == "The image provider's answer is not an image."


def test_openai_images_png_with_a_damaged_chunk_is_refused(fake_openai, images_client):
    output = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(output, format="PNG")
    damaged = bytearray(output.getvalue())
    damaged[len(damaged) // 2] ^= 0x01  # inside the image data: that chunk's CRC no longer matches
    answer = base64.b64encode(bytes(damaged)).decode()
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": answer}]}))

    with pytest.raises(ProviderError) as raised:
        images_client.generate(request())

    assert raised.value.message == "The image provider's answer is not an image."


@pytest.mark.parametrize(
    ("status", "error"), [(503, RetryableProviderError), (429, RetryableProviderError), (400, ProviderError)]
)
def test_openai_images_errors_are_classified(fake_openai, images_client, status, error):
    fake_openai.route("/v1/images/generations", lambda body: (status, {"error": {"message": "no"}}))

    with pytest.raises(error) as raised:
        images_client.generate(request())

    assert raised.value.retryable is (status != 400)


def test_openai_images_url_answer_is_downloaded_through_the_guard(fake_openai, images_client):
    # The fake server is on 127.0.0.1: the guard must refuse to download from it, without an exception leak.
    fake_openai.route(
        "/v1/images/generations", lambda body: (200, {"data": [{"url": fake_openai.base_url + "/files/a.png"}]})
    )

    with pytest.raises(ProviderError) as raised:
        images_client.generate(request())

    assert "refused" in raised.value.message
    assert [sent.path for sent in fake_openai.requests] == ["/v1/images/generations"]
