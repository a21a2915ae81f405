"""An external image provider's panels are lettered (unless the run says not), and designed characters are drawn
in the colours their features name: the comic pipeline on the fake OpenAI-compatible server."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from comicmem_site.memory_config import ProviderConfig
from memory_app.errors import ValidationFailed
from memory_app.models import Character
from tests.workflows.real_pipelines.test_openai_path import paths, png_b64, story_model
from tests.workflows.real_pipelines.test_runs_inline import start

pytestmark = pytest.mark.django_db

CAPTION_FILL = (255, 250, 220)


@pytest.fixture
def online(settings, openai_llm):
    """Chat and images on the fake server: the scripted story model, a green picture for every panel."""
    openai_llm.route("/v1/chat/completions", story_model)
    openai_llm.route("/v1/images/generations", lambda body: (200, {"data": [{"b64_json": png_b64()}]}))
    image = ProviderConfig(provider="openai", base_url=openai_llm.base_url, model="seedream", timeout_seconds=2.0)
    providers = settings.MEMORY.providers.model_copy(update={"image": image})
    settings.MEMORY = settings.MEMORY.model_copy(update={"providers": providers})
    return openai_llm


def panel(media, run, index: int = 0) -> Image.Image:
    name = run.data["rendered"][index]["name"]
    with Image.open(io.BytesIO((media / name).read_bytes())) as image:
        return image.convert("RGB")


def test_panels_of_an_external_provider_carry_the_caption_unless_lettering_is_off(
    run_inline, user, project, story, media, online
):
    lettered = start(run_inline, user, "comic_generation", {"text": story}, {"segment_length": 60})
    bare = start(run_inline, user, "comic_generation", {"text": story}, {"segment_length": 60, "lettering": False})

    assert (lettered.status, bare.status) == ("completed", "completed"), (lettered.error, bare.error)
    assert lettered.preferences["lettering"] is True and bare.preferences["lettering"] is False
    assert panel(media, lettered).getpixel((14, 14)) == CAPTION_FILL
    assert panel(media, bare).getpixel((14, 14)) == (0, 128, 0)  # the fake provider's green picture
    # Lettering off is another image: the provider was asked again, not served the lettered panel from the cache.
    assert paths(online).count("/v1/images/generations") == 2 * len(lettered.data["segments"])


def test_a_lettering_preference_that_is_not_true_or_false_is_refused(run_inline, user, project, story, online):
    with pytest.raises(ValidationFailed) as raised:
        start(run_inline, user, "comic_generation", {"text": story}, {"lettering": "no"})

    assert raised.value.details == {"fields": {"preferences.lettering": ["lettering is true or false."]}}


def test_a_designed_character_is_drawn_in_its_features_colours(run_inline, user, project, story, media, online):
    run = start(run_inline, user, "comic_generation", {"text": story}, {"segment_length": 60})

    assert run.status == "completed", run.error
    # The scripted model describes 小明's hair as 蓝色 (blue): drawn blue, not in the name's colour.
    assert Character.objects.get(project=project, name="小明").appearance_features["hair_color"] == "蓝色"
    design = next(item for item in run.data["characters"] if item["name"] == "小明")
    assert design["colors"]["hair"] == "#1B98E0"
