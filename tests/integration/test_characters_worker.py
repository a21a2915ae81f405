"""A comic run on a real worker with a character a person edited: what they set survives automatic design, and
the character's reference image reaches the image provider's request."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from memory_app.models import Character, CharacterVersion
from memory_app.services.character_references import character_reference_add
from memory_app.services.characters import character_create
from tests.integration.test_workflow_worker import FAST, status_of, wait_for
from tests.workflows.real_pipelines.conftest import STORY
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def png(color: str, size: tuple[int, int] = (16, 16)) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", size, color).save(output, format="PNG")
    return output.getvalue()


def test_a_person_set_feature_survives_a_run_and_the_reference_reaches_the_image_api(
    start_worker, media, settings, fake_openai, user, project, manga_shonen
):
    def images(body: dict) -> tuple[int, dict]:
        width, height = (int(side) for side in body["size"].split("x"))
        return 200, {"data": [{"b64_json": base64.b64encode(png("#336699", (width, height))).decode()}]}

    fake_openai.route("/v1/images/generations", images)
    character = character_create(
        user=user,
        project=project,
        name="小明",
        appearance_features={"hair_color": "紫色"},
        colors={"clothing": "#00AA55"},
    )
    picture = png("#CC2200")
    character_reference_add(user=user, character=character, data=picture)
    start_worker(
        **FAST,
        COMICMEM_TEST_MEDIA_ROOT=str(media),
        CACHE_DIR=str(settings.CACHE_DIR),
        IMAGE_PROVIDER="openai",
        IMAGE_BASE_URL=fake_openai.base_url,
        IMAGE_MODEL="seedream",
    )

    run = engine.workflow_start(
        user=user,
        workflow_type="comic_generation",
        project_id="proj-001",
        data={"text": STORY, "style": "manga_shonen"},
        preferences={"segment_length": 60, "panels_per_page": 2},
    )
    wait_for(lambda: status_of(run) in {"completed", "failed"}, timeout=120, what="the run to end")

    run.refresh_from_db()
    assert run.status == "completed", run.error
    character = Character.objects.get(pk=character.pk)
    assert character.appearance_features["hair_color"] == "紫色"
    assert character.colors["clothing"] == "#00AA55"
    assert len(character.appearance_features) > 1  # the run added what was new
    designed = CharacterVersion.objects.get(character=character, source="run")
    assert (designed.action, str(designed.workflow_id)) == ("designed", str(run.pk))
    assert designed.changes["appearance_features"]["before"] == {"hair_color": "紫色"}
    assert designed.changes["appearance_features"]["after"]["hair_color"] == "紫色"
    image_requests = [request.body for request in fake_openai.requests if request.path == "/v1/images/generations"]
    with_xiaoming = [body for body in image_requests if "小明 (" in body["prompt"]]
    assert with_xiaoming, [body["prompt"] for body in image_requests]
    expected = f"data:image/png;base64,{base64.b64encode(picture).decode()}"
    assert all(body.get("image") == [expected] for body in with_xiaoming)
    assert all("hair_color: 紫色" in body["prompt"] for body in with_xiaoming)
    panel = next(item for item in run.data["panels"] if item["figures"] and item["figures"][0]["name"] == "小明")
    assert panel["figures"][0]["colors"]["clothing"] == "#00AA55"
