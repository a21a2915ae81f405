"""The run page of the admin: panels and pages as thumbnails, the step timeline, the snapshot branch tree with its
actions, the failure in words, the data as collapsible JSON. Reading is in ``memory_app.selectors.workflow_page``;
the actions call the engine's operations (``memory_app.services.workflow``)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from memory_app.admin.charts import branch_graph, gantt
from memory_app.admin.images import stored_image_response
from memory_app.errors import ComicmemError
from memory_app.models import WorkflowSnapshot, WorkflowState, WorkflowStatus
from memory_app.selectors.workflow import workflow_output_files
from memory_app.selectors.workflow_page import (
    page_of,
    run_failure,
    run_file_sha256,
    run_pages,
    run_panel_count,
    run_panels,
    run_snapshot_tree,
    run_timeline,
)
from memory_app.services.workflow import workflow_operations

PANELS_PER_PAGE = 48
UNITS_PER_PAGE = 200
SNAPSHOTS_PER_PAGE = 50
# Larger data is shown cut, with a note: the page must stay light whatever a run holds.
MAX_JSON_CHARS = 200_000

OPERATIONS = ("restore", "continue", "resume", "cancel", "redraw")


def _pretty(value: Any) -> dict[str, Any]:
    text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    return {"text": text[:MAX_JSON_CHARS], "cut": len(text) > MAX_JSON_CHARS, "chars": len(text)}


def run_page_context(request: HttpRequest, run: WorkflowState) -> dict[str, Any]:
    panel_page = page_of(total=run_panel_count(workflow=run), size=PANELS_PER_PAGE, requested=request.GET.get("panels"))
    timeline = run_timeline(workflow=run, units_page=request.GET.get("units"), units_per_page=UNITS_PER_PAGE)
    tree = run_snapshot_tree(workflow=run, page=request.GET.get("snapshots"), per_page=SNAPSHOTS_PER_PAGE)
    # A run at work cannot be restored or redrawn; a pending one (restored without running, or queued) can.
    running = run.status == WorkflowStatus.IN_PROGRESS
    return {
        "panels": run_panels(workflow=run, offset=panel_page.offset, limit=PANELS_PER_PAGE),
        "panel_page": panel_page,
        "pages": run_pages(workflow=run),
        "timeline": timeline,
        "step_chart": gantt(timeline.steps, start=timeline.start, end=timeline.end),
        "unit_chart": gantt(timeline.units, start=timeline.start, end=timeline.end),
        "tree": tree,
        "graph": branch_graph(tree.nodes),
        "failure": run_failure(workflow=run),
        "json_blocks": [
            ("data", _pretty(run.data)),
            ("preferences", _pretty(run.preferences)),
            ("progress", _pretty(run.progress)),
            ("error", _pretty(run.error)),
            ("compression_history", _pretty(run.compression_history)),
        ],
        "can_restore": not running,
        "can_continue": run.status == WorkflowStatus.AWAITING_INPUT,
        "can_resume": run.status == WorkflowStatus.FAILED,
        "can_cancel": run.status in (WorkflowStatus.IN_PROGRESS, WorkflowStatus.PENDING, WorkflowStatus.AWAITING_INPUT),
        "can_redraw": not running and bool((run.data or {}).get("rendered")),
        "query": request.GET,
    }


def run_file_response(run: WorkflowState, file_name: str) -> HttpResponse:
    """One of the run's own files (a panel, a page) by file name; names come from the run's state, never from the
    request, so no other blob can be reached this way."""
    name = workflow_output_files(workflow=run).get(file_name)
    if name is None:
        return stored_image_response(name="", label=file_name)
    return stored_image_response(name=name, label=file_name, sha256=run_file_sha256(workflow=run, file_name=file_name))


class RunActionForm(forms.Form):
    operation = forms.ChoiceField(choices=[(name, name) for name in OPERATIONS])
    snapshot = forms.IntegerField(required=False, min_value=1)
    rerun = forms.BooleanField(required=False)
    panel = forms.IntegerField(required=False, min_value=1)


def run_action(request: HttpRequest, run: WorkflowState) -> HttpResponse:
    """A POST from the run page: do the operation through the engine, say how it went, go back to a run page."""
    change_url = reverse("admin:memory_app_workflowstate_change", args=[run.pk])
    form = RunActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not a valid action: {form.errors.as_text()}")
        return HttpResponseRedirect(change_url)
    values = form.cleaned_data
    operations = workflow_operations()
    user = request.user if request.user.is_authenticated else None
    try:
        match values["operation"]:
            case "restore":
                snapshot = WorkflowSnapshot.objects.filter(workflow=run, sequence=values["snapshot"]).first()
                if snapshot is None:
                    messages.error(request, f"Workflow {run.pk} has no snapshot #{values['snapshot']}.")
                    return HttpResponseRedirect(change_url)
                index = WorkflowSnapshot.objects.filter(workflow=run, sequence__lt=snapshot.sequence).count()
                operations.restore(workflow=run, index=index, rerun=values["rerun"], user=user)
                done = f"Restored to snapshot #{snapshot.sequence}{' and running on' if values['rerun'] else ''}."
            case "continue":
                operations.continue_run(workflow=run, user=user)
                done = "Continued."
            case "resume":
                operations.resume(workflow=run, user=user)
                done = "Resumed from the failed step."
            case "cancel":
                operations.cancel(workflow=run, user=user)
                done = "Cancelled."
            case _:
                if values["panel"] is None:
                    messages.error(request, "Say which panel to redraw.")
                    return HttpResponseRedirect(change_url)
                fork = operations.redraw(workflow=run, panel=values["panel"], user=user)
                messages.success(request, f"Panel {values['panel']} is redrawn in workflow {fork.pk}.")
                return HttpResponseRedirect(reverse("admin:memory_app_workflowstate_change", args=[fork.pk]))
    except ComicmemError as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(change_url)
    messages.success(request, done)
    return HttpResponseRedirect(change_url)
