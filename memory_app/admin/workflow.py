"""Admin for workflow runs: filters; the run page (panels, step timeline, snapshot tree: ``workflow_page``); actions
to resume, continue, cancel and restore; a page to redirect one run (restore with a data patch and preferences,
redraw a panel)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from memory_app.admin.generic import ModelAdmin
from memory_app.admin.workflow_page import run_action, run_file_response, run_page_context
from memory_app.errors import ComicmemError
from memory_app.models import WorkflowSnapshot, WorkflowState
from memory_app.services.workflow import workflow_operations


def _staff_user(request: HttpRequest) -> User:
    """The signed-in staff member: the admin lets no one else reach its actions."""
    user = request.user
    if not user.is_authenticated:
        raise PermissionDenied
    return user


def _run_each(
    modeladmin: ModelAdmin[WorkflowState], request: HttpRequest, runs: QuerySet[WorkflowState], operation: str
) -> None:
    done = 0
    for run in runs:
        try:
            getattr(workflow_operations(), operation)(workflow=run, user=request.user)
            done += 1
        except ComicmemError as exc:
            modeladmin.message_user(request, f"{run.pk}: {exc.message}", messages.ERROR)
    if done:
        modeladmin.message_user(
            request, f"{operation.replace('_run', '').capitalize()}: {done} workflow(s).", messages.SUCCESS
        )


_RUN_FIELDS = (
    "workflow_id",
    "workflow_type",
    "project",
    "owner",
    "steps",
    "current_step",
    "step_index",
    "step_key",
    "status",
    "head",
    "created_at",
    "updated_at",
    "stuck_since",
    "forked_from",
    "redraw_panel",
    "redirect_link",
)


@admin.register(WorkflowState)
class WorkflowStateAdmin(ModelAdmin[WorkflowState]):
    list_display = ["workflow_id", "workflow_type", "project", "owner", "status", "current_step", "updated_at"]
    list_filter = ["workflow_type", "status", ("stuck_since", admin.EmptyFieldListFilter), "project"]
    search_fields = ["workflow_id", "project__public_id", "owner__username"]
    # The JSON fields (data, preferences, progress, error) are shown pretty and collapsible by the run page's
    # template; snapshots and units are drawn as a paged tree and timeline, not as inlines of every row.
    fields = _RUN_FIELDS
    readonly_fields = _RUN_FIELDS
    change_form_template = "admin/memory_app/workflow_run.html"
    actions = ["resume_runs", "continue_runs", "cancel_runs"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Runs start through the API or the engine, which also enqueue their work.
        return False

    @admin.action(description="Resume the selected failed workflows")
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowState]) -> None:
        _run_each(self, request, queryset, "resume")

    @admin.action(description="Cancel the selected workflows")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowState]) -> None:
        _run_each(self, request, queryset, "cancel")

    @admin.action(description="Continue the selected workflows awaiting input")
    def continue_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowState]) -> None:
        _run_each(self, request, queryset, "continue_run")

    @admin.display(description="redirect")
    def redirect_link(self, run: WorkflowState) -> str:
        url = reverse("admin:memory_app_workflowstate_redirect", args=[run.pk])
        return format_html('<a href="{}">Restore with edits, or redraw a panel</a>', url)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<uuid:workflow_id>/redirect/",
                self.admin_site.admin_view(self.redirect_view),
                name="memory_app_workflowstate_redirect",
            ),
            path(
                "<uuid:workflow_id>/file/<str:file_name>",
                self.admin_site.admin_view(self.file_view),
                name="memory_app_workflowstate_file",
            ),
            path(
                "<uuid:workflow_id>/act/",
                self.admin_site.admin_view(self.action_view),
                name="memory_app_workflowstate_act",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        # Every field is read-only: the run changes through the page's actions, so no Save buttons.
        read_only = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
        context = {**(extra_context or {}), **read_only, **(run_page_context(request, run) if run is not None else {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def file_view(self, request: HttpRequest, workflow_id: str, file_name: str) -> HttpResponse:
        """A panel or page of the run, for the run page's thumbnails (staff only, like every admin view)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return run_file_response(get_object_or_404(WorkflowState, pk=workflow_id), file_name)

    def action_view(self, request: HttpRequest, workflow_id: str) -> HttpResponse:
        """Restore, continue, resume, cancel or redraw, posted from the run page (with its CSRF token)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        return run_action(request, get_object_or_404(WorkflowState, pk=workflow_id))

    def redirect_view(self, request: HttpRequest, workflow_id: str) -> HttpResponse:
        """Restore to a snapshot with a data patch and preferences, or redraw one panel in a new run."""
        run = get_object_or_404(WorkflowState, pk=workflow_id)
        restore_form = RestoreForm(request.POST if request.POST.get("operation") == "restore" else None)
        redraw_form = RedrawForm(request.POST if request.POST.get("operation") == "redraw" else None)
        if request.method == "POST":
            done = _redirect_apply(request, run, restore_form, redraw_form)
            if done is not None:
                self.message_user(request, done[0])
                return HttpResponseRedirect(reverse("admin:memory_app_workflowstate_change", args=[done[1]]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Redirect workflow {run.pk}",
            "run": run,
            "restore_form": restore_form,
            "redraw_form": redraw_form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/memory_app/workflow_redirect.html", context)


class _JSONObjectField(forms.CharField):
    """A JSON object typed into a text area (a merge patch); empty is none."""

    def clean(self, value: Any) -> dict[str, Any] | None:
        text = super().clean(value)
        if not text:
            return None
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not JSON: {exc}.") from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError("A JSON object.")
        return parsed


class RestoreForm(forms.Form):
    step_index = forms.IntegerField(help_text="Index into the snapshot list; negative counts from the end.")
    rerun = forms.BooleanField(required=False, initial=True)
    data_patch = _JSONObjectField(required=False, widget=forms.Textarea(attrs={"rows": 6, "cols": 80}))
    preferences = _JSONObjectField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}))


class RedrawForm(forms.Form):
    panel = forms.IntegerField(min_value=1, help_text="From 1, as panel_001.png.")
    seed = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    prompt_extra = forms.CharField(required=False, max_length=500)


def _redirect_apply(
    request: HttpRequest, run: WorkflowState, restore_form: RestoreForm, redraw_form: RedrawForm
) -> tuple[str, Any] | None:
    """Run the submitted operation; (message, the run to show) when it was done, None to show the forms again."""
    try:
        if restore_form.is_bound and restore_form.is_valid():
            values = restore_form.cleaned_data
            workflow_operations().restore(
                workflow=run,
                index=values["step_index"],
                rerun=values["rerun"],
                user=_staff_user(request),
                data_patch=values["data_patch"],
                preferences=values["preferences"],
            )
            return f"Workflow {run.pk} forked from snapshot {values['step_index']}.", run.pk
        if redraw_form.is_bound and redraw_form.is_valid():
            values = redraw_form.cleaned_data
            fork = workflow_operations().redraw(
                workflow=run,
                panel=values["panel"],
                user=_staff_user(request),
                seed=values["seed"],
                prompt_extra=values["prompt_extra"] or "",
            )
            return f"Panel {values['panel']} is redrawn in workflow {fork.pk}.", fork.pk
    except ComicmemError as exc:
        messages.error(request, exc.message)
    return None


@admin.register(WorkflowSnapshot)
class WorkflowSnapshotAdmin(ModelAdmin[WorkflowSnapshot]):
    list_display = ["workflow", "sequence", "event", "step", "status", "created_at"]
    list_filter = ["event", "status", "workflow__workflow_type"]
    search_fields = ["workflow__workflow_id"]
    readonly_fields = [field.name for field in WorkflowSnapshot._meta.fields]
    actions = ["restore_and_rerun", "restore_only"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WorkflowSnapshot | None = None) -> bool:
        return False

    def _restore(self, request: HttpRequest, queryset: QuerySet[WorkflowSnapshot], *, rerun: bool) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one snapshot to restore to.", messages.ERROR)
            return
        snapshot = queryset.select_related("workflow").get()
        index = list(snapshot.workflow.snapshots.order_by("sequence").values_list("pk", flat=True)).index(snapshot.pk)
        try:
            workflow_operations().restore(
                workflow=snapshot.workflow, index=index, rerun=rerun, user=_staff_user(request)
            )
        except ComicmemError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"Workflow {snapshot.workflow_id} forked from snapshot #{snapshot.sequence}.")

    @admin.action(description="Restore its workflow to this snapshot and run on (fork)")
    def restore_and_rerun(self, request: HttpRequest, queryset: QuerySet[WorkflowSnapshot]) -> None:
        self._restore(request, queryset, rerun=True)

    @admin.action(description="Restore its workflow to this snapshot, without running (fork)")
    def restore_only(self, request: HttpRequest, queryset: QuerySet[WorkflowSnapshot]) -> None:
        self._restore(request, queryset, rerun=False)
