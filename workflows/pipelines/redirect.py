"""What the pipelines declare so a person can redirect their runs: the shape their data must keep when a data patch
edits it (``check_data``), their preferences checked again when a restore changes them (``check_preferences``), and
how a comic redraws one panel in a new run (``COMIC_REDRAW``).

The shapes are open: a key a step has not written yet may be absent, and keys of no step are left alone; but a key
that is there has the type the next steps read (a panel's caption stays a string, its dialogue a list of
``[speaker, line]`` pairs).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from django.conf import settings
from django.core.files.storage import default_storage
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from memory_app.errors import Conflict, InvalidDataPatch
from workflows.engine import Redraw, RedrawRequest
from workflows.pipelines.common import bool_preference, int_preference, output_folder, output_store, ratio_preference

SEED_MAX = 2**31 - 1


class _Open(BaseModel):
    # Strict: "3" is not a number, 1 is not a string; extra keys are the pipeline's own business.
    model_config = ConfigDict(extra="allow", strict=True)


NonEmpty = Annotated[str, Field(min_length=1)]


class Segment(_Open):
    index: int
    text: str


class DialogueLine(_Open):
    speaker: str
    text: str


class Script(_Open):
    index: int
    scene: str
    caption: str
    characters: list[str]
    dialogue: list[DialogueLine]


class Design(_Open):
    name: NonEmpty
    appearance_features: dict[str, Any]
    consistent_features: list[str]
    colors: dict[str, Any]


class Figure(_Open):
    name: str
    colors: dict[str, Any]


class Panel(_Open):
    index: int
    prompt: str
    negative_prompt: str
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)]
    caption: str
    # [speaker, line] pairs (JSON has no tuples).
    dialogue: list[Annotated[list[str], Field(min_length=2, max_length=2)]]
    figures: list[Figure]
    palette: list[str]


class Rendered(_Open):
    index: int
    name: str
    sha256: str


class ComicData(_Open):
    text: NonEmpty
    style: NonEmpty
    segments: list[Segment] | None = None
    main_characters: list[str] | None = None
    scripts: list[Script] | None = None
    characters: list[Design] | None = None
    panels: list[Panel] | None = None
    rendered: list[Rendered] | None = None

    @model_validator(mode="after")
    def _panels_in_order(self) -> ComicData:
        # A panel's index names its file (panel_001.png is index 0): the list stays in order, without gaps.
        if self.panels is not None and [panel.index for panel in self.panels] != list(range(len(self.panels))):
            raise ValueError("panels must keep their indexes 0, 1, 2, ... in order")
        return self


class CompressionData(_Open):
    text: NonEmpty
    main_characters: list[str] | None = None
    plot_summary: str | None = None
    compressed_text: str | None = None


def _shape_check(model: type[BaseModel], data: dict[str, Any]) -> None:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        fields: dict[str, list[str]] = {}
        for error in exc.errors():
            where = "data" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
            fields.setdefault(where, []).append(error["msg"])
        raise InvalidDataPatch(
            f"The data patch breaks the shape of the workflow's data ({len(fields)} field(s)).",
            details={"fields": fields},
        ) from None


def comic_data_check(data: dict[str, Any]) -> None:
    _shape_check(ComicData, data)


def compression_data_check(data: dict[str, Any]) -> None:
    _shape_check(CompressionData, data)


def comic_preferences_check(preferences: dict[str, Any]) -> dict[str, Any]:
    config = settings.MEMORY.pipelines
    checked = dict(preferences)
    checked["segment_length"] = int_preference(checked, "segment_length", config.segment_target_chars, 10, 2000)
    checked["panels_per_page"] = int_preference(checked, "panels_per_page", config.panels_per_page, 1, 12)
    checked["seed"] = int_preference(checked, "seed", 0, 0, SEED_MAX)
    checked["lettering"] = bool_preference(checked, "lettering", True)
    return checked


def compression_preferences_check(preferences: dict[str, Any]) -> dict[str, Any]:
    checked = dict(preferences)
    checked["target_ratio"] = ratio_preference(checked)
    if "recall" in checked:
        checked["recall"] = bool_preference(checked, "recall")
    return checked


# --- redrawing one panel ------------------------------------------------------------------------------------

# The keys the steps after the fan-out wrote: a redraw makes them again.
_AFTER_IMAGES = ("rendered", "outputs", "quality")


def _rendered(data: dict[str, Any]) -> list[Any] | None:
    rendered, panels = data.get("rendered"), data.get("panels")
    if not isinstance(rendered, list) or not all(isinstance(item, dict) for item in rendered):
        return None
    if not isinstance(panels, list) or len(panels) != len(rendered):
        # The panels were edited (a restore without rerun) after these were drawn: nothing matches to redraw.
        return None
    return sorted(rendered, key=lambda item: int(item.get("index", 0)))


def _redraw_edit(data: dict[str, Any], request: RedrawRequest) -> dict[str, Any]:
    panels = [dict(panel) for panel in data["panels"]]
    panel = panels[request.index]
    panel["seed"] = request.seed
    if request.prompt_extra:
        panel["prompt"] = f"{panel['prompt']}, {request.prompt_extra}"
    panels[request.index] = panel
    edited = {key: value for key, value in data.items() if key not in _AFTER_IMAGES}
    return {
        **edited,
        "panels": panels,
        "redraw": {"panel": request.index + 1, "seed": request.seed, "prompt_extra": request.prompt_extra},
    }


def _redraw_carry(result: dict[str, Any], project_id: str, workflow_id: str) -> dict[str, Any]:
    """The panel as the new run keeps it: the same bytes under its own folder, checked against the checksum."""
    source = str(result["name"])
    try:
        with default_storage.open(source, "rb") as handle:
            content = handle.read()
    except FileNotFoundError:
        raise Conflict(
            f"The panel file {source.rsplit('/', 1)[-1]} of the run is missing; it cannot be carried over.",
            details={"name": source.rsplit("/", 1)[-1]},
        ) from None
    if hashlib.sha256(content).hexdigest() != result["sha256"]:
        raise Conflict(f"The panel file {source.rsplit('/', 1)[-1]} no longer matches its checksum.")
    name = f"{output_folder(project_id, workflow_id)}/{source.rsplit('/', 1)[-1]}"
    output_store(name, content)
    return {**result, "name": name, "carried_from": source}


COMIC_REDRAW = Redraw(step="image_generation", results=_rendered, edit=_redraw_edit, carry=_redraw_carry)
