"""text_compression (seed §5.3.1): text_analysis → character_extraction → plot_summarization →
compression_execution → quality_assessment.

Step functions are pure (state data in, state data out); history records are written by ``commit`` callbacks,
in the transaction that records the step, so they happen once. The two compressing steps return
``compression_history`` entries through the engine's reserved key.

Input: ``{"text": str}``; preferences: ``target_ratio`` (kept share of the text, default
``pipelines.default_target_ratio``), ``ratio_tolerance`` (default 0.1), ``recall`` (default false: the project's
earlier stories and characters are recalled by ``character_extraction`` into ``data.recall``; a recalled
character this text names is kept as a main character, and the plot summary's prompt is given the recalled lines).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memory_app.choices import HistoryAction
from memory_app.errors import ValidationFailed
from memory_app.services.history import history_record
from workflows.engine import COMPRESSION_HISTORY_KEY, StartRequest, Step, StepContext, WorkflowType
from workflows.engine import workflow_type_register as register
from workflows.pipelines.common import (
    bool_preference,
    compression_entry,
    input_text,
    ratio_preference,
    run_owner,
    run_project,
)
from workflows.pipelines.generation import chat_cached
from workflows.pipelines.recall import recalled_lines, run_recall
from workflows.pipelines.redirect import compression_data_check, compression_preferences_check
from workflows.providers import llm, text

PLOT_RATIO = 0.25
MAX_MAIN_CHARACTERS = 8


def prepare(request: StartRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    preferences = dict(request.preferences)
    preferences["target_ratio"] = ratio_preference(preferences)
    tolerance = preferences.get("ratio_tolerance", 0.1)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0 <= tolerance < 1:
        raise ValidationFailed(
            "ratio_tolerance is a number from 0 to 1.",
            details={"fields": {"preferences.ratio_tolerance": ["A number from 0 to 1."]}},
        )
    preferences["ratio_tolerance"] = float(tolerance)
    if "recall" in preferences:
        preferences["recall"] = bool_preference(preferences, "recall")
    return {"text": input_text(request.data)}, preferences


def text_analysis(context: StepContext) -> dict[str, Any]:
    return {**context.data, "analysis": text.analyze(context.data["text"])}


def character_extraction(context: StepContext) -> dict[str, Any]:
    """Every character found (with ``aliases`` and whether ``present``); the main ones are those present, the
    most mentioned first: the compressions must keep them."""
    found = llm.characters_find(context.data["text"], ask=chat_cached)
    main = [str(item["name"]) for item in found if item["present"]][:MAX_MAIN_CHARACTERS]
    forms = {str(item["name"]): [str(item["name"]), *item["aliases"]] for item in found}
    recall = run_recall(context, forms=forms)
    if recall is None:
        return {**context.data, "characters": found, "main_characters": main}
    # A character of an earlier chapter that this text names stays in the compression (continuity).
    earlier = [hit["name"] for hit in recall["hits"] if hit.get("name") and hit["name"] in context.data["text"]]
    main = list(dict.fromkeys([*main, *earlier]))[:MAX_MAIN_CHARACTERS]
    return {**context.data, "characters": found, "main_characters": main, "recall": recall}


def plot_summarization(context: StepContext) -> dict[str, Any]:
    source = context.data["text"]
    summary = llm.compress(
        source,
        target_ratio=PLOT_RATIO,
        keep_names=context.data["main_characters"],
        ask=chat_cached,
        recalled=recalled_lines(context.data.get("recall")),
    )
    return {
        **context.data,
        "plot_summary": summary,
        COMPRESSION_HISTORY_KEY: [compression_entry("plot_summarization", len(source), len(summary))],
    }


def compression_execution(context: StepContext) -> dict[str, Any]:
    source = context.data["text"]
    ratio = context.preferences["target_ratio"]
    compressed = llm.compress(source, target_ratio=ratio, keep_names=context.data["main_characters"], ask=chat_cached)
    return {
        **context.data,
        "compressed_text": compressed,
        COMPRESSION_HISTORY_KEY: [compression_entry("compression_execution", len(source), len(compressed))],
    }


def quality_assessment(context: StepContext) -> dict[str, Any]:
    """The ratio is within tolerance of the target and every main character is still named in the result."""
    source, compressed = context.data["text"], context.data["compressed_text"]
    target = context.preferences["target_ratio"]
    tolerance = context.preferences["ratio_tolerance"]
    ratio = round(len(compressed) / len(source), 4) if source else 0.0
    preserved = [name for name in context.data["main_characters"] if name in compressed]
    missing = [name for name in context.data["main_characters"] if name not in compressed]
    ratio_ok = abs(ratio - target) <= tolerance
    quality = {
        "compression_ratio": ratio,
        "target_ratio": target,
        "ratio_tolerance": tolerance,
        "ratio_ok": ratio_ok,
        "preserved_characters": preserved,
        "missing_characters": missing,
        "passed": ratio_ok and not missing,
    }
    return {**context.data, "quality": quality}


def _record(action: HistoryAction, details_of: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """A ``commit`` callback writing one history record of ``action`` with ``details_of(step result)``."""

    def commit(context: StepContext, result: dict[str, Any]) -> None:
        history_record(
            project=run_project(context),
            action=action,
            user=run_owner(context),
            workflow_id=context.workflow_id,
            details=details_of(result),
        )

    return commit


TEXT_COMPRESSION = register(
    WorkflowType(
        name="text_compression",
        description="Compress a story to a target ratio, keeping its named characters.",
        prepare=prepare,
        check_data=compression_data_check,
        check_preferences=compression_preferences_check,
        steps=(
            Step(
                "text_analysis",
                text_analysis,
                commit=_record(HistoryAction.TEXT_ANALYZED, lambda data: data["analysis"]),
            ),
            Step(
                "character_extraction",
                character_extraction,
                commit=_record(
                    HistoryAction.CHARACTER_EXTRACTED,
                    lambda data: {"characters": data["main_characters"], "provider": llm.provider_name()},
                ),
            ),
            Step(
                "plot_summarization",
                plot_summarization,
                commit=_record(HistoryAction.PLOT_SUMMARIZED, lambda data: {"output_size": len(data["plot_summary"])}),
            ),
            Step(
                "compression_execution",
                compression_execution,
                commit=_record(
                    HistoryAction.TEXT_COMPRESSED,
                    lambda data: {
                        "input_size": len(data["text"]),
                        "output_size": len(data["compressed_text"]),
                        "compression_ratio": round(len(data["compressed_text"]) / len(data["text"]), 4),
                        "preserved_characters": [n for n in data["main_characters"] if n in data["compressed_text"]],
                        "model_used": llm.provider_name(),
                    },
                ),
            ),
            Step("quality_assessment", quality_assessment),
        ),
    )
)
