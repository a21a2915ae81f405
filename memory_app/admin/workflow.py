"""Admin for workflow runs: filters, snapshots and units inline, and actions to resume, cancel and restore."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from memory_app.admin.generic import ModelAdmin, TabularInline
from memory_app.errors import ComicmemError
from memory_app.models import WorkflowSnapshot, WorkflowState, WorkflowUnit
from memory_app.services.workflow import workflow_operations


class ReadOnlyInline(TabularInline[Any, WorkflowState]):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# Shown and read-only alike: one tuple serves both (the stubs type the two attributes as different lists).
_SNAPSHOT_FIELDS = (
    "sequence",
    "parent",
    "event",
    "step",
    "step_index",
    "status",
    "data",
    "progress",
    "error",
    "created_at",
)
_UNIT_FIELDS = ("step", "unit_index", "status", "attempts", "lease_owner", "lease_expires_at", "result", "error")


class WorkflowSnapshotInline(ReadOnlyInline):
    model = WorkflowSnapshot
    fk_name = "workflow"
    fields = _SNAPSHOT_FIELDS
    readonly_fields = _SNAPSHOT_FIELDS
    ordering = ["sequence"]


class WorkflowUnitInline(ReadOnlyInline):
    model = WorkflowUnit
    fields = _UNIT_FIELDS
    readonly_fields = _UNIT_FIELDS


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
        modeladmin.message_user(request, f"{operation.capitalize()}: {done} workflow(s).", messages.SUCCESS)


@admin.register(WorkflowState)
class WorkflowStateAdmin(ModelAdmin[WorkflowState]):
    list_display = ["workflow_id", "workflow_type", "project", "owner", "status", "current_step", "updated_at"]
    list_filter = ["workflow_type", "status", ("stuck_since", admin.EmptyFieldListFilter), "project"]
    search_fields = ["workflow_id", "project__public_id", "owner__username"]
    readonly_fields = [
        "workflow_id",
        "workflow_type",
        "project",
        "owner",
        "steps",
        "current_step",
        "step_index",
        "step_key",
        "status",
        "progress",
        "data",
        "preferences",
        "compression_history",
        "error",
        "head",
        "created_at",
        "updated_at",
        "stuck_since",
    ]
    inlines = [WorkflowSnapshotInline, WorkflowUnitInline]
    actions = ["resume_runs", "cancel_runs"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Runs start through the API or the engine, which also enqueue their work.
        return False

    @admin.action(description="Resume the selected failed workflows")
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowState]) -> None:
        _run_each(self, request, queryset, "resume")

    @admin.action(description="Cancel the selected workflows")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[WorkflowState]) -> None:
        _run_each(self, request, queryset, "cancel")


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
