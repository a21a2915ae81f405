"""comic_generation (seed §5.3.2): text_segmentation → script_generation → character_design →
scene_composition → image_generation (one unit per panel) → quality_control.

Input: ``{"text": str, "style": template id, "previous_context": str}``; preferences may carry ``style``,
``previous_context``, ``segment_length`` (target characters per panel), ``panels_per_page``, ``seed``
(default: derived from the text, so the same text gives the same panels and a re-run costs nothing) and
``recall`` (default false: the project's earlier stories and characters recalled into script generation and
character design, kept in ``data.recall``; see ``workflows.pipelines.recall``).

Characters stay the same across panels — and across runs — because their look lives in the character
records: ``character_design`` keeps what a record already says (hair, eyes, clothing, colours) and only adds
what is new; every panel's prompt states those features and the renderer draws with those colours.

Each panel image is cached in the ``images`` namespace keyed by everything it is made from (prompt,
negative prompt, size, seed, figures, provider, model, and the renderer's version and font file); the seed is
kept in the state. Outputs are written to ``projects/<project>/images/<workflow>/panel_NNN.png`` and
``page_NNN.png`` and listed in ``data.outputs``. Quality control fails a run whose panels needed a glyph the
lettering font does not have (they would show boxes), naming the characters.
"""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.urls import reverse

from memory_app.choices import HistoryAction
from memory_app.errors import NotFound, ProviderError, ValidationFailed
from memory_app.providers.fonts import glyphs_missing, renderer_identity
from memory_app.selectors.creative import style_get
from memory_app.services.creative import style_usage_record
from memory_app.services.events import event_panel_ready
from memory_app.services.history import history_record
from memory_app.services.previous_context import previous_context_check, previous_context_resolve
from memory_app.services.webhooks import webhook_dispatch
from workflows.engine import FanOutStep, StartRequest, Step, StepContext, WorkflowType
from workflows.engine import workflow_type_register as register
from workflows.pipelines.comic_characters import character_design, character_design_commit, characters_with_person_edits
from workflows.pipelines.common import (
    bool_preference,
    input_text,
    int_preference,
    output_folder,
    output_store,
    run_owner,
    run_project,
    text_seed,
)
from workflows.pipelines.generation import chat_cached, generation_cached
from workflows.pipelines.recall import continuity_notes, run_recall
from workflows.pipelines.redirect import COMIC_REDRAW, comic_data_check, comic_preferences_check
from workflows.providers import llm, text
from workflows.providers.image import (
    OfflineRenderer,
    PanelFigure,
    PanelReference,
    PanelRequest,
    image_provider,
    lettered_text,
    page_compose,
)

MAX_MAIN_CHARACTERS = 8
# The most character reference images sent with one panel (image APIs take a handful).
MAX_PANEL_REFERENCES = 4
CONSISTENCY_NEGATIVE = "inconsistent character design, changing hair color, changing clothes"


def prepare(request: StartRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    config = settings.MEMORY.pipelines
    data, preferences = request.data, dict(request.preferences)
    style_id = data.get("style", preferences.get("style", config.default_style))
    if not isinstance(style_id, str) or not style_id:
        raise ValidationFailed("style is a template id.", details={"fields": {"style": ["A template id."]}})
    try:
        style = style_get(user=request.user, template_id=style_id)
    except NotFound:
        raise ValidationFailed(
            f"Unknown style '{style_id}'.",
            details={"fields": {"style": [f"No style template '{style_id}'; list them at /api/styles/."]}},
        ) from None
    previous = data.get("previous_context", preferences.get("previous_context"))
    checked = previous_context_check(project=request.project, value=previous)
    text_value = input_text(data)
    preferences["segment_length"] = int_preference(preferences, "segment_length", config.segment_target_chars, 10, 2000)
    preferences["panels_per_page"] = int_preference(preferences, "panels_per_page", config.panels_per_page, 1, 12)
    preferences["seed"] = int_preference(preferences, "seed", text_seed(text_value), 0, 2**31 - 1)
    if "recall" in preferences:
        preferences["recall"] = bool_preference(preferences, "recall")
    # Caption and balloons over every panel, whatever the image provider; false: the pictures alone.
    preferences["lettering"] = bool_preference(preferences, "lettering", True)
    preferences.pop("previous_context", None)
    preferences.pop("style", None)
    return {"text": text_value, "style": style.public_id, "previous_context": checked.value}, preferences


# --- steps -------------------------------------------------------------------------------------------------


def text_segmentation(context: StepContext) -> dict[str, Any]:
    started = time.monotonic()
    source = context.data["text"]
    pieces = text.segment(
        source,
        target_chars=context.preferences["segment_length"],
        max_segments=settings.MEMORY.pipelines.max_segments,
    )
    found = [item for item in llm.characters_find(source, ask=chat_cached) if item["present"]]
    names = [str(item["name"]) for item in found[:MAX_MAIN_CHARACTERS]]
    segmented = sum(len(piece) for piece in pieces)
    return {
        **context.data,
        "segments": [{"index": index, "text": piece} for index, piece in enumerate(pieces)],
        "main_characters": names,
        # Other names of each main character (小雨 for 林小雨): a panel that uses one has that character.
        "character_aliases": {str(item["name"]): list(item["aliases"]) for item in found[:MAX_MAIN_CHARACTERS]},
        "segmentation": {
            "input_length": len(source),
            "segments_count": len(pieces),
            "average_segment_length": round(segmented / len(pieces)) if pieces else 0,
            "compression_ratio": round(segmented / len(source), 4) if source else 0.0,
            "preserved_characters": [name for name in names if any(name in piece for piece in pieces)],
            "model_used": llm.provider_name(),
            "processing_time": round(time.monotonic() - started, 3),
            "target_language": "chinese",
        },
    }


def text_segmentation_commit(context: StepContext, result: dict[str, Any]) -> None:
    history_record(
        project=run_project(context),
        action=HistoryAction.TEXT_SEGMENTATION_COMPLETED,
        user=run_owner(context),
        workflow_id=context.workflow_id,
        details=result["segmentation"],
    )


def script_generation(context: StepContext) -> dict[str, Any]:
    """Each segment's panel script. With recall, the earlier chapters' lines that name the segment's characters
    or places go into its prompt and stay in the script as ``continuity``."""
    names = context.data["main_characters"]
    aliases = context.data.get("character_aliases", {})
    forms = {name: [name, *aliases.get(name, [])] for name in names}
    recall = run_recall(context, forms=forms)
    scripts = []
    for segment in context.data["segments"]:
        notes = continuity_notes(segment["text"], recall=recall, forms=forms)
        script = llm.script_for(segment["text"], names=names, aliases=aliases, ask=chat_cached, recalled=notes)
        scripts.append({"index": segment["index"], **script, **({"continuity": notes} if recall is not None else {})})
    if recall is None:
        return {**context.data, "scripts": scripts}
    return {**context.data, "scripts": scripts, "recall": recall}


def _describe(design: dict[str, Any]) -> str:
    features = design["appearance_features"]
    kept = [f"{key}: {features[key]}" for key in design["consistent_features"] if key in features]
    return f"{design['name']} ({', '.join(kept)})"


def scene_composition(context: StepContext) -> dict[str, Any]:
    """Each panel's prompt and negative prompt from its script, the character records, the style, the previous
    panel and ``previous_context``; and the panel's seed."""
    style = style_get(user=run_owner(context), template_id=context.data["style"])
    previous = previous_context_resolve(project=run_project(context), value=context.data.get("previous_context"))
    characters = characters_with_person_edits(context)
    designs = {design["name"]: design for design in characters}
    palette = list(style.visual_parameters.get("color_palette") or ["#FFFFFF"])
    base_seed = context.preferences["seed"]
    reference_name = None
    if previous.image is not None:
        # Kept beside the outputs (a deterministic name: a retry overwrites it) so the first panel can show it.
        reference_name = f"{output_folder(context.project_id, context.workflow_id)}/previous_context.png"
        output_store(reference_name, _thumbnail(previous.image))
    panels = []
    previous_scene = ""
    for script in context.data["scripts"]:
        present = [name for name in script["characters"] if name in designs]
        parts = [style.prompt, script["scene"]]
        parts += [_describe(designs[name]) for name in present]
        if style.reference_examples:
            parts.append(f"in the manner of the style's examples: {'; '.join(style.reference_examples)}")
        if previous_scene:
            parts.append(f"continuing from the previous panel: {previous_scene}")
        elif previous.text:
            parts.append(f"previously: {previous.text}")
        panels.append(
            {
                "index": script["index"],
                "prompt": ", ".join(part for part in parts if part),
                "negative_prompt": ", ".join(part for part in (style.negative_prompt, CONSISTENCY_NEGATIVE) if part),
                # Wrapped within the seed's range (the image APIs' signed 32-bit seed), as a base near the top needs.
                "seed": (base_seed + script["index"]) % 2**31,
                "caption": script["caption"] or script["scene"],
                "dialogue": [[line["speaker"], line["text"]] for line in script["dialogue"]],
                "figures": [
                    {
                        "name": name,
                        "colors": designs[name]["colors"],
                        "reference_colors": _reference_colors(designs[name]),
                    }
                    for name in present
                ],
                "character_references": [
                    {**reference, "character": name}
                    for name in present
                    for reference in designs[name].get("references", [])
                ][:MAX_PANEL_REFERENCES],
                "palette": palette,
                # Only the first panel continues from the previous episode; later ones from their own predecessor.
                "reference_sha256": previous.sha256 if script["index"] == 0 else None,
                "reference_name": reference_name if script["index"] == 0 else None,
            }
        )
        previous_scene = script["scene"]
    return {
        **context.data,
        "characters": characters,
        "panels": panels,
        "previous_context_used": {
            "kind": previous.kind,
            "sha256": previous.sha256,
            "source": previous.source,
            "stored_as": reference_name,
        },
    }


def _reference_colors(design: dict[str, Any]) -> list[str]:
    """The dominant colours of a character's reference images, most telling first, at most four."""
    colors = [color for reference in design.get("references", []) for color in reference["dominant_colors"][:2]]
    return list(dict.fromkeys(colors))[:4]


def _thumbnail(data: bytes, size: int = 256) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        picture = image.convert("RGB")
    picture.thumbnail((size, size))
    output = io.BytesIO()
    picture.save(output, format="PNG")
    return output.getvalue()


def scene_composition_commit(context: StepContext, result: dict[str, Any]) -> None:
    project, owner = run_project(context), run_owner(context)
    style_usage_record(
        style=style_get(user=owner, template_id=result["style"]),
        project=project,
        user=owner,
        workflow_id=context.workflow_id,
    )
    history_record(
        project=project,
        action=HistoryAction.SCENE_COMPOSED,
        user=owner,
        workflow_id=context.workflow_id,
        details={"panels": len(result["panels"]), "style": result["style"]},
    )


def _panel_request(panel: dict[str, Any], *, lettering: bool = True) -> PanelRequest:
    config = settings.MEMORY.pipelines
    return PanelRequest(
        prompt=panel["prompt"],
        negative_prompt=panel["negative_prompt"],
        seed=panel["seed"],
        width=config.panel_width,
        height=config.panel_height,
        caption=panel["caption"],
        dialogue=tuple((speaker, line) for speaker, line in panel["dialogue"]),
        figures=tuple(
            PanelFigure(
                name=figure["name"],
                colors=figure["colors"],
                reference_colors=tuple(figure.get("reference_colors", ())),
            )
            for figure in panel["figures"]
        ),
        palette=tuple(panel["palette"]),
        lettering=lettering,
        reference_sha256=panel.get("reference_sha256"),
        reference=_read(panel["reference_name"]) if panel.get("reference_name") else None,
        character_references=tuple(
            PanelReference(
                character=reference["character"],
                sha256=reference["sha256"],
                content_type=reference["content_type"],
                data=_read(reference["storage_name"]),
                dominant_colors=tuple(reference["dominant_colors"]),
            )
            for reference in panel.get("character_references", ())
        ),
    )


def _read(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        data: bytes = handle.read()
    return data


def image_generation(context: StepContext) -> dict[str, Any]:
    """One panel: from the ``images`` cache, or drawn by the provider and cached; then written to storage."""
    panel = context.item
    provider = image_provider()
    # Read here, not at scene composition: a fork or restore that turns lettering off redraws with it off.
    request = _panel_request(panel, lettering=context.preferences.get("lettering", True) is not False)
    started = time.monotonic()
    drawing: list[float] = []

    def generate() -> bytes:
        # The provider's own time: not the wait for a fan-out lane's turn (``provider_turn``) before it.
        began = time.monotonic()
        try:
            return provider.generate(request)
        finally:
            drawing.append(time.monotonic() - began)

    drawn = generation_cached(
        namespace="images",
        key=request.cache_key(provider.name, provider.model, renderer_identity()),
        generate=generate,
        content_type="image/png",
        project_key=context.project_id,
    )
    image = drawn.value
    # The characters the lettering font has no glyph for (drawn as boxes): quality control fails such a panel.
    lettered = OfflineRenderer.lettering(request) if isinstance(provider, OfflineRenderer) else lettered_text(request)
    missing = glyphs_missing(lettered)
    name = f"{output_folder(context.project_id, context.workflow_id)}/panel_{panel['index'] + 1:03d}.png"
    output_store(name, image)
    return {
        "index": panel["index"],
        "name": name,
        "seed": panel["seed"],
        "sha256": hashlib.sha256(image).hexdigest(),
        "size_bytes": len(image),
        "cached": drawn.cached,
        "glyphs_missing": missing,
        "generation_time": round(drawing[0] if drawing else time.monotonic() - started, 3),
        "model": provider.model,
        "provider": provider.name,
        "prompt_used": panel["prompt"],
    }


def image_generation_commit(context: StepContext, result: dict[str, Any]) -> None:
    # The route that serves the panel to the run's owner, not its storage name (the API makes it absolute).
    image_url = reverse(
        "workflow-output", kwargs={"workflow_id": str(context.workflow_id), "name": result["name"].rsplit("/", 1)[-1]}
    )
    history_record(
        project=run_project(context),
        action=HistoryAction.IMAGE_GENERATION_COMPLETED,
        user=run_owner(context),
        workflow_id=context.workflow_id,
        details={
            "segment_index": result["index"],
            "image_url": image_url,
            "prompt_used": result["prompt_used"][:500],
            "generation_time": result["generation_time"],
            "model": result["model"],
            "seed": result["seed"],
            "cached": result["cached"],
        },
    )
    webhook_dispatch(
        event="panel.ready",
        project=run_project(context),
        payload={"workflow_id": str(context.workflow_id), "panel_index": result["index"], "image_url": image_url},
    )
    event_panel_ready(workflow_id=context.workflow_id, index=result["index"], blob=result["name"])


def image_generation_merge(data: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    rendered = [{key: value for key, value in result.items() if key != "prompt_used"} for result in results]
    return {**data, "rendered": rendered}


def quality_control(context: StepContext) -> dict[str, Any]:
    """Every panel present, readable and of the panel size, its text lettered with real glyphs; every scripted
    character designed; pages laid out."""
    from PIL import Image

    config = settings.MEMORY.pipelines
    rendered = sorted(context.data["rendered"], key=lambda item: item["index"])
    expected = [panel["index"] for panel in context.data["panels"]]
    if [item["index"] for item in rendered] != expected:
        raise ProviderError("Panels are missing.", details={"expected": expected})
    images = []
    for item in rendered:
        with default_storage.open(item["name"], "rb") as handle:
            data = handle.read()
        if hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise ProviderError(f"Panel {item['name']} does not match what was generated.")
        with Image.open(io.BytesIO(data)) as image:
            if image.size != (config.panel_width, config.panel_height):
                raise ProviderError(f"Panel {item['name']} has the wrong size {image.size}.")
        images.append(data)
    unlettered = {item["name"]: item["glyphs_missing"] for item in rendered if item.get("glyphs_missing")}
    if unlettered:
        characters = "".join(dict.fromkeys("".join(unlettered.values())))
        shown = characters if len(characters) <= 40 else f"{characters[:40]}... ({len(characters)} characters)"
        panels = ", ".join(name.rsplit("/", 1)[-1] for name in unlettered)
        raise ProviderError(
            f"The lettering font has no glyph for {shown!r}: {panels} would show boxes.",
            details={"glyphs_missing": unlettered},
        )
    designed = {design["name"] for design in context.data["characters"]}
    undesigned = sorted({name for script in context.data["scripts"] for name in script["characters"]} - designed)
    per_page = context.preferences["panels_per_page"]
    folder = output_folder(context.project_id, context.workflow_id)
    pages = []
    for number, start in enumerate(range(0, len(images), per_page), start=1):
        page = page_compose(images[start : start + per_page], title=context.data["style"], page_number=number)
        pages.append(output_store(f"{folder}/page_{number:03d}.png", page))
    return {
        **context.data,
        "outputs": {"panels": [item["name"] for item in rendered], "pages": pages},
        "quality": {
            "panels_expected": len(expected),
            "panels_verified": len(images),
            "characters_without_design": undesigned,
            "pages": len(pages),
            "passed": not undesigned,
        },
    }


COMIC_GENERATION = register(
    WorkflowType(
        name="comic_generation",
        description="Turn a story into comic panels and pages, keeping its characters and style consistent.",
        prepare=prepare,
        check_data=comic_data_check,
        check_preferences=comic_preferences_check,
        redraw=COMIC_REDRAW,
        steps=(
            Step("text_segmentation", text_segmentation, commit=text_segmentation_commit),
            Step("script_generation", script_generation),
            Step("character_design", character_design, commit=character_design_commit),
            Step("scene_composition", scene_composition, commit=scene_composition_commit),
            FanOutStep(
                "image_generation",
                items=lambda data: data["panels"],
                run=image_generation,
                merge=image_generation_merge,
                commit=image_generation_commit,
            ),
            Step("quality_control", quality_control),
        ),
    )
)
