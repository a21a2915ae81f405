"""What the staff pages of a character and of a style show beyond their fields: pictures, versions, scores."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from memory_app.models import Character, CharacterVersion, StyleTemplate, StyleUsage, WorkflowState
from memory_app.selectors.workflow_page import Thumbnail

# How far back the pages look for panels: the newest runs of the project (or of the style), a bounded amount.
RECENT_RUNS = 10
MAX_THUMBNAILS = 24
MAX_SCORES = 200


def _panel_thumbnails(run: WorkflowState, wanted: set[str] | None) -> list[Thumbnail]:
    """The drawn panels of ``run`` (those showing one of the names in ``wanted``, or all when None)."""
    data = run.data or {}
    drawn = {item.get("index"): item for item in data.get("rendered") or [] if isinstance(item, dict)}
    thumbnails = []
    for panel in data.get("panels") or []:
        if not isinstance(panel, dict):
            continue
        names = {figure.get("name") for figure in panel.get("figures") or [] if isinstance(figure, dict)}
        item = drawn.get(panel.get("index"))
        if item is None or not isinstance(item.get("name"), str) or (wanted is not None and not names & wanted):
            continue
        index = panel.get("index")
        thumbnails.append(
            Thumbnail(
                kind="panel",
                number=index + 1 if isinstance(index, int) else 0,
                file_name=item["name"].rsplit("/", 1)[-1],
                seed=panel.get("seed"),
                prompt=str(panel.get("prompt") or ""),
                cached=item.get("cached") if isinstance(item.get("cached"), bool) else None,
                workflow_id=str(run.pk),
                caption=str(panel.get("caption") or ""),
            )
        )
    return thumbnails


def _recent_runs(runs: QuerySet[WorkflowState]) -> list[WorkflowState]:
    return list(
        runs.filter(outputs_expired_at__isnull=True).order_by("-created_at").only("workflow_id", "data")[:RECENT_RUNS]
    )


def character_appearances(*, character: Character) -> list[Thumbnail]:
    """The drawn panels of the project's newest runs that show this character (by its name or an alias)."""
    names = {character.name, *[alias for alias in character.aliases if isinstance(alias, str)]}
    thumbnails: list[Thumbnail] = []
    for run in _recent_runs(WorkflowState.objects.filter(project_id=character.project_id)):
        thumbnails += _panel_thumbnails(run, names)
        if len(thumbnails) >= MAX_THUMBNAILS:
            break
    return thumbnails[:MAX_THUMBNAILS]


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: str
    after: str


@dataclass(frozen=True)
class VersionView:
    version: CharacterVersion
    changes: list[FieldChange]


def _shown(value: Any) -> str:
    return "—" if value is None else json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True)


def character_versions_page(*, character: Character, limit: int) -> list[VersionView]:
    """The newest ``limit`` versions, newest first, each with its changes as field, before, after."""
    versions = CharacterVersion.objects.filter(character=character).select_related("user").order_by("-version")
    views = []
    for version in versions[:limit]:
        changes = version.changes if isinstance(version.changes, dict) else {}
        rows = []
        for name, change in sorted(changes.items()):
            if isinstance(change, dict) and ("before" in change or "after" in change):
                rows.append(
                    FieldChange(field=name, before=_shown(change.get("before")), after=_shown(change.get("after")))
                )
            else:
                rows.append(FieldChange(field=name, before="", after=_shown(change)))
        views.append(VersionView(version=version, changes=rows))
    return views


def style_examples(*, style: StyleTemplate) -> list[Thumbnail]:
    """Panels drawn in this style: the newest runs that recorded a use of it."""
    workflow_ids = list(
        StyleUsage.objects.filter(style=style, workflow_id__isnull=False)
        .order_by("-used_at")
        .values_list("workflow_id", flat=True)[: RECENT_RUNS * 2]
    )
    thumbnails: list[Thumbnail] = []
    for run in _recent_runs(WorkflowState.objects.filter(pk__in=set(workflow_ids))):
        thumbnails += _panel_thumbnails(run, None)[:4]
        if len(thumbnails) >= MAX_THUMBNAILS:
            break
    return thumbnails[:MAX_THUMBNAILS]


def style_scores(*, style: StyleTemplate) -> list[tuple[dt.datetime, float]]:
    """The satisfaction scores given to the style's uses, oldest first (the newest ``MAX_SCORES``)."""
    rows = (
        StyleUsage.objects.filter(style=style, satisfaction_score__isnull=False)
        .order_by("-rated_at", "-used_at")
        .values_list("rated_at", "used_at", "satisfaction_score")[:MAX_SCORES]
    )
    scores = [(rated_at or used_at, float(score or 0.0)) for rated_at, used_at, score in rows]
    return sorted(scores)
