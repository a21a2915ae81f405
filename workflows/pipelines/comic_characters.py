"""The comic pipeline's characters: ``character_design`` (each main character designed, found on record by its
name or aliases, what a person set kept) and its commit, and the designs as a person has edited them since, which
``scene_composition`` draws."""

from __future__ import annotations

from typing import Any

from memory_app.choices import HistoryAction
from memory_app.selectors.characters import character_references_brief
from memory_app.selectors.creative import character_records_known_as
from memory_app.services.characters import character_design_merge, character_person_set, character_state
from memory_app.services.creative import character_upsert
from memory_app.services.history import history_record
from workflows.engine import StepContext
from workflows.pipelines.common import run_owner, run_project
from workflows.pipelines.generation import chat_cached
from workflows.pipelines.recall import mentioning, run_recall
from workflows.providers import llm


def character_design(context: StepContext) -> dict[str, Any]:
    """Design every main character. A character on record, found by its name or one of its aliases or by one of
    the story's aliases of it, is that character (scripts are renamed to its record's name); it keeps what it has
    and what a person set (``character_design_merge``). With recall, what the earlier chapters say of a character
    goes into its design (``recalled``: the hits' ids)."""
    passages = [segment["text"] for segment in context.data["segments"]]
    story_aliases = context.data.get("character_aliases", {})
    forms = {name: [name, *story_aliases.get(name, [])] for name in context.data["main_characters"]}
    recall = run_recall(context, forms=forms)
    records = character_records_known_as(project_id=context.project_id, forms=forms)
    canonical = {name: records[name].name if name in records else name for name in forms}
    designs: dict[str, dict[str, Any]] = {}
    for name, known in forms.items():
        mentions = sum(passage.count(form) for passage in passages for form in known)
        aliases = [form for form in known if form != canonical[name]]
        if canonical[name] in designs:
            design = designs[canonical[name]]
            design["mentions"] += mentions
            design["aliases"] = list(dict.fromkeys([*design["aliases"], *aliases]))
            continue
        recalled = mentioning(recall, [*known, canonical[name]])
        design = llm.design_character(
            name, passages=passages, aliases=known[1:], ask=chat_cached, recalled=[hit["text"] for hit in recalled]
        )
        if recall is not None:
            design["recalled"] = [{"kind": hit["kind"], "id": hit["id"]} for hit in recalled]
        design["name"] = canonical[name]
        design["aliases"] = aliases
        record = records.get(name)
        if record is not None:
            design.update(character_design_merge(character_state(record), design))
        design["references"] = character_references_brief(character=record)
        design["mentions"] = mentions
        designs[design["name"]] = design
    scripts = [
        {
            **script,
            "characters": list(dict.fromkeys(canonical.get(name, name) for name in script["characters"])),
            "dialogue": [
                {**line, "speaker": canonical.get(line["speaker"], line["speaker"])} for line in script["dialogue"]
            ],
        }
        for script in context.data.get("scripts", [])
    ]
    result = {**context.data, "characters": list(designs.values())}
    if "scripts" in context.data:
        result["scripts"] = scripts
    if recall is not None:
        result["recall"] = recall
    return result


def characters_with_person_edits(context: StepContext) -> list[dict[str, Any]]:
    """The run's character designs with what a person set on their records since (a run paused after
    ``character_design`` draws the owner's edits): locked fields and the reference images as they are now."""
    characters = context.data["characters"]
    records = character_records_known_as(
        project_id=context.project_id, forms={design["name"]: [design["name"]] for design in characters}
    )
    return [
        {
            **design,
            **character_person_set(character_state(records[design["name"]]), design),
            "references": character_references_brief(character=records[design["name"]]),
        }
        if design["name"] in records
        else design
        for design in characters
    ]


def character_design_commit(context: StepContext, result: dict[str, Any]) -> None:
    project = run_project(context)
    created: list[str] = []
    updated: list[str] = []
    for design in result["characters"]:
        # ``character_design`` named each design after its record; the story's other names are its aliases.
        _character, was_created = character_upsert(
            project=project,
            name=design["name"],
            appearance_features=design["appearance_features"],
            consistent_features=design["consistent_features"],
            personality_traits=design["personality_traits"],
            colors=design["colors"],
            mentions=design["mentions"],
            aliases=design.get("aliases", []),
            user=run_owner(context),
            workflow_id=context.workflow_id,
        )
        (created if was_created else updated).append(design["name"])
    history_record(
        project=project,
        action=HistoryAction.CHARACTER_DESIGNED,
        user=run_owner(context),
        workflow_id=context.workflow_id,
        details={"created": created, "updated": updated},
    )
