"""The image providers: the offline Pillow renderer, the OpenAI-style images client over real HTTP, pages."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFont

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import ProviderError, RetryableProviderError
from memory_app.providers.fonts import (
    RENDERER_VERSION,
    RendererIdentity,
    glyphs_missing,
    lettering_face,
    packaged_font_path,
    renderer_identity,
)
from tests.fakes.openai_server import RawAnswer
from tests.memory_app.conftest import public_loopback  # noqa: F401 - a fixture, used by name
from tests.support.http_servers import ImageServer
from workflows.providers import image as image_module
from workflows.providers.image import (
    OfflineRenderer,
    OpenAIImages,
    PanelFigure,
    PanelRequest,
    figure_positions,
    letter,
    lettering_layer,
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


def test_cjk_text_is_drawn_with_the_font():
    blank = pixels(OfflineRenderer().generate(request(figures=(), caption="")))
    captioned = pixels(OfflineRenderer().generate(request(figures=(), caption="小明背着书包走进村口")))

    box = (14, 14, 200, 30)
    assert dark_pixels(blank.crop(box)) == 0
    assert dark_pixels(captioned.crop(box)) > 100


@pytest.fixture
def no_system_fonts(monkeypatch, tmp_path):
    """No system font can be found: the font search paths point at an empty folder, and Pillow refuses to open
    any font file outside the font package."""
    import cvttf_NotoSansCJK_Regular

    package = Path(cvttf_NotoSansCJK_Regular.__file__).parent
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    for variable in ("XDG_DATA_HOME", "XDG_DATA_DIRS", "FONTCONFIG_PATH"):
        monkeypatch.setenv(variable, str(empty))
    opened: list[str] = []
    original = ImageFont.truetype

    def package_fonts_only(font=None, size=10, *args, **kwargs):
        path = Path(str(font))
        if not path.is_absolute() or package not in path.parents:
            raise OSError(f"no system fonts here: {font}")
        opened.append(str(path))
        return original(font, size, *args, **kwargs)

    monkeypatch.setattr(ImageFont, "truetype", package_fonts_only)
    lettering_face.cache_clear()
    yield opened
    lettering_face.cache_clear()


def test_chinese_is_lettered_with_real_glyphs_without_any_system_font(no_system_fonts):
    def caption_of(text: str) -> bytes:
        panel = pixels(OfflineRenderer().generate(request(figures=(), caption=text)))
        return panel.crop((14, 14, 200, 40)).tobytes()

    xiaoming, laowang = caption_of("小明"), caption_of("老王")
    boxes = caption_of("\U0010fffe\U0010fffe")  # two code points no font maps: the .notdef glyph twice

    # Pillow's default font would draw both names as the same two boxes.
    assert xiaoming != laowang
    assert boxes not in {xiaoming, laowang}
    assert glyphs_missing("小明老王") == ""
    assert no_system_fonts and all(path.endswith("NotoSansCJKtc-Regular.otf") for path in no_system_fonts)


def test_without_a_font_panels_fall_back_with_a_warning(caplog, monkeypatch):
    monkeypatch.setattr("memory_app.providers.fonts.FONT_PACKAGE", "comicmem_no_such_font_package")
    lettering_face.cache_clear()
    try:
        data = OfflineRenderer().generate(request(caption="hello 小明"))
        missing = glyphs_missing("hello 小明")
    finally:
        lettering_face.cache_clear()

    assert pixels(data).size == (256, 256)
    assert "no lettering font" in caplog.text
    assert missing == "小明"


def test_the_lettering_is_caption_balloons_names_and_the_insets_label():
    lettering = OfflineRenderer.lettering(
        request(caption="村口", dialogue=(("小明", "你好"),), reference=b"png", reference_sha256="abc")
    )

    assert lettering == "村口你好小明前情"


def test_the_renderers_identity_is_in_the_cache_key():
    key = request().cache_key("offline", "pillow-panel-v1", renderer_identity())

    assert key["renderer"] == {
        "version": RENDERER_VERSION,
        "font_sha256": hashlib.sha256(packaged_font_path().read_bytes()).hexdigest(),
    }
    other = RendererIdentity(RENDERER_VERSION, "0" * 64)
    assert request().cache_key("offline", "pillow-panel-v1", other) != key


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
    # The provider is on 127.0.0.1 (allowed for its own URLs); 127.0.0.2 is another loopback host: the guard must
    # refuse to download from it, without an exception leak.
    other_host = fake_openai.base_url.replace("127.0.0.1", "127.0.0.2")
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"url": other_host + "/files/a.png"}]}))

    with pytest.raises(ProviderError) as raised:
        images_client.generate(request())

    assert "refused" in raised.value.message
    assert [sent.path for sent in fake_openai.requests] == ["/v1/images/generations"]


# --- answers that are too large, cut short or not JSON ------------------------------------------------------

MiB = 1024 * 1024


def capped_client(fake_openai, max_answer_bytes: int) -> OpenAIImages:
    return OpenAIImages(
        ProviderConfig(
            provider="openai",
            base_url=fake_openai.base_url,
            model="seedream",
            timeout_seconds=5.0,
            max_answer_bytes=max_answer_bytes,
        )
    )


def streamed_b64_answer(total: int, chunk: int = 64 * 1024):
    """A JSON answer of ``total`` bytes, mostly one base64 string, made chunk by chunk (never held whole)."""
    head, tail = b'{"data": [{"b64_json": "', b'"}]}'
    yield head
    for _ in range((total - len(head) - len(tail)) // chunk):
        yield b"A" * chunk
    yield tail


@pytest.mark.parametrize("declared", [False, True], ids=["streamed-with-no-length", "content-length-declared"])
def test_openai_images_answer_over_the_limit_is_refused_with_memory_bounded(fake_openai, declared):
    total = 64 * MiB
    answer = (
        RawAnswer(b'{"data": [{"b64_json": "AAAA', declared_length=total)
        if declared
        else RawAnswer(streamed_b64_answer(total))
    )
    fake_openai.route("/v1/images/generations", lambda body: (200, answer))
    client = capped_client(fake_openai, 1 * MiB)

    tracemalloc.start()
    try:
        with pytest.raises(ProviderError) as raised:
            client.generate(request())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert type(raised.value) is ProviderError  # the same request would get the same answer: not retried
    assert raised.value.message == "The image provider's answer is over the limit of 1048576 bytes."
    assert raised.value.details == {"provider": "openai", "model": "seedream", "limit_bytes": MiB}
    # Read no further than the limit and a chunk: a few MiB at most were allocated, not the 64 MiB sent.
    assert peak < 6 * MiB, peak
    assert fake_openai.bytes_sent < 16 * MiB


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            RawAnswer(b'{"data": [{"b64_json": "iVBORw0KGgo'),
            "The image provider's answer is not JSON (application/json, 35 bytes): cut short, or a page from "
            """something in between: '{"data": [{"b64_json": "iVBORw0KGgo'""",
        ),
        (
            RawAnswer(b'{"data": [{"b64_json": "iVBORw0KGgo', declared_length=4096),
            "The image provider's answer was cut short: peer closed connection without sending complete message "
            "body (received 35 bytes, expected 4096)",
        ),
        (
            RawAnswer(b"<html><body>Gateway Timeout</body></html>", content_type="text/html"),
            "The image provider's answer is not JSON (text/html, 41 bytes): cut short, or a page from something in "
            "between: '<html><body>Gateway Timeout</body></html>'",
        ),
    ],
    ids=["json-cut-short", "body-cut-short", "html-page"],
)
def test_openai_images_answer_cut_short_or_not_json_is_a_retryable_provider_error(
    fake_openai, images_client, answer, message
):
    fake_openai.route("/v1/images/generations", lambda body: (200, answer))

    with pytest.raises(RetryableProviderError) as raised:
        images_client.generate(request())

    assert raised.value.message == message
    assert raised.value.retryable is True
    assert "AttributeError" not in str(raised.value.details)


@pytest.mark.usefixtures("public_loopback")
def test_openai_images_url_answer_is_downloaded_within_the_answer_limit(fake_openai, settings):
    # The provider's limit applies to the download, not previous_context's (set larger here to tell them apart).
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"pipelines": settings.MEMORY.pipelines.model_copy(update={"previous_context_max_bytes": 8 * MiB})}
    )
    server = ImageServer({"/big.png": (200, {"Content-Type": "image/png"}, b"\x89PNG" + bytes(2 * MiB))})
    url = f"http://images.example:{server.port}/big.png"
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"url": url}]}))
    try:
        with pytest.raises(ProviderError) as raised:
            capped_client(fake_openai, 1 * MiB).generate(request())
    finally:
        server.close()

    assert raised.value.message == "The image URL was refused: The image is over the size limit."
    assert [path for path, _host in server.hits] == ["/big.png"]


# --- URLs on the provider's own host ---------------------------------------------------------------------------


def panel_png(width: int = 256, height: int = 256, color: str = "navy") -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (width, height), color).save(output, format="PNG")
    return output.getvalue()


def test_a_url_on_the_provider_s_own_loopback_host_is_downloaded(fake_openai, images_client):
    server = ImageServer({"/files/a.png": (200, {"Content-Type": "image/png"}, panel_png())})
    url = f"http://127.0.0.1:{server.port}/files/a.png"  # the base URL's host (the fake is on 127.0.0.1), any port
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"url": url}]}))
    try:
        png = images_client.generate(request(figures=()))
    finally:
        server.close()

    with Image.open(io.BytesIO(png)) as panel:
        assert panel.size == (256, 256)
        assert panel.getpixel((128, 128)) == (0, 0, 128)
    assert server.hits == [("/files/a.png", f"127.0.0.1:{server.port}")]


def test_a_url_on_a_host_of_the_allow_list_is_downloaded(fake_openai):
    server = ImageServer({"/a.png": (200, {"Content-Type": "image/png"}, panel_png())})
    url = f"http://localhost:{server.port}/a.png"
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"url": url}]}))
    refused = OpenAIImages(ProviderConfig(provider="openai", base_url=fake_openai.base_url, model="m"))
    allowed = OpenAIImages(
        ProviderConfig(provider="openai", base_url=fake_openai.base_url, model="m", allowed_hosts="localhost, cdn.lan")
    )
    try:
        with pytest.raises(ProviderError) as raised:
            refused.generate(request(figures=()))
        png = allowed.generate(request(figures=()))
    finally:
        server.close()

    assert (
        raised.value.message
        == "The image URL was refused: The host 'localhost' resolves to an address that is not public."
    )
    assert png.startswith(b"\x89PNG")
    assert [path for path, _host in server.hits] == ["/a.png"]


# --- lettering over a provider's panel -------------------------------------------------------------------------

CAPTION_FILL = (255, 250, 220)


def lettered_request(**overrides) -> PanelRequest:
    return request(
        **{"caption": "傍晚，河边。", "dialogue": (("小明", "好大的鱼！"), ("旁白", "鱼跑了。")), **overrides}
    )


def test_a_provider_s_panel_gets_the_caption_and_balloons_in_the_lettering_font(fake_openai, images_client):
    fake_openai.route(
        "/v1/images/generations",
        lambda body: (200, {"data": [{"b64_json": base64.b64encode(panel_png()).decode()}]}),
    )

    png = images_client.generate(lettered_request())
    bare = images_client.generate(lettered_request(lettering=False))

    with Image.open(io.BytesIO(png)) as panel, Image.open(io.BytesIO(bare)) as picture:
        assert panel.size == picture.size == (256, 256)
        assert panel.getpixel((14, 14)) == CAPTION_FILL  # the caption box, top left
        assert panel.getpixel((128, 128)) == (0, 0, 128)  # the provider's picture elsewhere
        white = sum(1 for pixel in panel.get_flattened_data() if pixel == (255, 255, 255))
        assert white > 1000  # the balloons
        assert set(picture.get_flattened_data()) == {(0, 0, 128)}  # lettering off: the picture as it came
    assert bare == panel_png()


def noisy_png(size: tuple[int, int]) -> bytes:
    output = io.BytesIO()
    Image.merge("RGB", [Image.effect_noise(size, 90) for _ in range(3)]).save(output, format="PNG")
    return output.getvalue()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"figures": (), "dialogue": (("旁白", "很久很久以前，有一条河。" * 4),)},
        {"caption": "第三天，小明和老王一起走到河边，看见王伯坐在槐树下钓鱼，大家都笑了。gjpqy" * 2, "width": 384},
        {
            "dialogue": (("小明", "鱼！"), ("老王", "哈哈。" * 9), ("小明", "走吧")),
            "figures": (PanelFigure("小明", RED_JACKET), PanelFigure("老王", RED_JACKET)),
        },
    ],
)
def test_the_lettering_layer_over_a_picture_gives_the_pixels_of_lettering_drawn_on_it(overrides):
    lettered = lettered_request(**overrides)
    picture = pixels(noisy_png((lettered.width, lettered.height)))

    drawn = picture.copy()
    letter(ImageDraw.Draw(drawn), lettered, figure_positions(len(lettered.figures), lettered.width))
    layer = lettering_layer(lettered)
    assert layer is not None
    pasted = picture.copy()
    pasted.paste(layer, (0, 0), layer)

    assert ImageChops.difference(drawn, pasted).getbbox() is None
    assert ImageChops.difference(drawn, picture).getbbox() is not None  # something was lettered
    assert lettering_layer(lettered_request(lettering=False)) is None


def test_a_lettered_panel_is_the_provider_s_picture_with_the_lettering_drawn_on_it(fake_openai, images_client):
    answer = noisy_png((256, 256))
    fake_openai.route(
        "/v1/images/generations", lambda body: (200, {"data": [{"b64_json": base64.b64encode(answer).decode()}]})
    )

    png = images_client.generate(lettered_request())

    expected = pixels(answer)
    letter(ImageDraw.Draw(expected), lettered_request(), figure_positions(1, 256))
    with Image.open(io.BytesIO(png)) as panel:
        assert (panel.format, panel.mode, panel.size) == ("PNG", "RGB", (256, 256))
        assert ImageChops.difference(panel.convert("RGB"), expected).getbbox() is None


def test_a_damaged_answer_is_refused_when_the_panel_is_lettered_too(fake_openai, images_client):
    damaged = bytearray(noisy_png((256, 256)))
    damaged[len(damaged) // 2] ^= 0x01
    answer = base64.b64encode(bytes(damaged)).decode()
    fake_openai.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": answer}]}))

    with pytest.raises(ProviderError) as raised:
        images_client.generate(lettered_request())

    assert raised.value.message == "The image provider's answer is not an image."


def test_a_provider_error_is_raised_as_it_was_when_the_panel_is_lettered(fake_openai, images_client):
    fake_openai.route("/v1/images/generations", lambda body: (503, {"error": {"message": "busy"}}))

    with pytest.raises(RetryableProviderError):
        images_client.generate(lettered_request())


def test_lettering_off_is_part_of_the_cache_key_and_on_keeps_the_old_key():
    identity = RendererIdentity(RENDERER_VERSION, "f" * 64)
    on, off = (
        lettered_request().cache_key("openai", "m", identity),
        lettered_request(lettering=False).cache_key("openai", "m", identity),
    )

    assert "lettering" not in on
    assert off == {**on, "lettering": False}


def test_the_offline_renderer_letters_nothing_when_lettering_is_off():
    lettered = Image.open(io.BytesIO(OfflineRenderer().generate(lettered_request())))
    bare = Image.open(io.BytesIO(OfflineRenderer().generate(lettered_request(lettering=False))))

    assert lettered.getpixel((14, 14)) == CAPTION_FILL
    assert bare.getpixel((14, 14)) != CAPTION_FILL
    assert OfflineRenderer.lettering(lettered_request(lettering=False)) == "小明"  # the figure's name only


def test_a_wrapped_line_never_starts_with_a_stop_or_closing_mark():
    face = image_module.font(16)
    text = "林小雨在夜市遇见了老朋友陈大山。小雨笑着说：好久不见！大山说：我们去吃臭豆腐吧。"
    # The width where the plain break would put ！ first on the second line.
    width = math.ceil(face.getlength("林小雨在夜市遇见了老朋友陈大山。小雨笑着说：好久不见"))

    lines = image_module.wrap(text, face, width)

    assert "".join(lines) == text
    assert lines[1].startswith("见！")
    assert not any(line[0] in "，。！？：；、）」』”" for line in lines)
    assert all(face.getlength(line) <= width for line in lines)


def test_a_figure_s_name_is_drawn_whole_above_the_panel_s_border():
    panel = pixels(OfflineRenderer().generate(request(width=512, height=512, lettering=False)))
    # The label's rows: between the feet (ground = height - 30) and the 6-pixel border.
    strip = panel.crop((200, 483, 312, 506)).convert("L")
    assert strip.point(lambda value: 255 if value < 70 else 0).getbbox() is not None
    # Nothing of the label reaches the border's rows (only the border's own black is there).
    border_row = panel.crop((12, 504, 500, 506)).convert("L")
    assert border_row.point(lambda value: 255 if value < 70 else 0).getbbox() is None
