"""/api/workflows/: start, list, inspect, snapshots, resume, restore (fork, with edits), continue, redraw a panel,
cancel."""

from __future__ import annotations

from typing import Any

from django.core.files.storage import default_storage
from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.authentication import authenticated_user
from memory_app.api.events import EVENT_STREAM_RESPONSES, LAST_EVENT_ID_PARAMETER, event_stream_response
from memory_app.api.fields import FreeFormDictField, ProjectIdField, StrictCharField, StrictChoiceField
from memory_app.api.history import AnyContentNegotiation
from memory_app.blob_storage import DEFAULT_STORAGE, blob_signed_url
from memory_app.errors import NotFound
from memory_app.models import WorkflowSnapshot, WorkflowState
from memory_app.selectors.projects import project_paths_public
from memory_app.selectors.workflow import workflow_get, workflow_list, workflow_output_files, workflow_snapshots
from workflows import engine
from workflows.filters import WorkflowFilterSet
from workflows.pipelines.common import output_folder


class WorkflowStateSerializer(serializers.ModelSerializer[WorkflowState]):
    project_id = serializers.CharField(source="project.public_id", read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True)
    forked_from = serializers.UUIDField(
        source="forked_from_id", read_only=True, allow_null=True, help_text="The run whose panel this run redraws."
    )

    class Meta:
        model = WorkflowState
        fields = [
            "workflow_id",
            "workflow_type",
            "project_id",
            "owner",
            "status",
            "current_step",
            "step_index",
            "steps",
            "progress",
            "data",
            "preferences",
            "compression_history",
            "error",
            "queued_at",
            "forked_from",
            "redraw_panel",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: WorkflowState) -> dict[str, Any]:
        representation = super().to_representation(instance)
        # A run's error (a provider's message, a missing file) may name its files too.
        for field in ("data", "error", "progress"):
            representation[field] = project_paths_public(representation[field], project=instance.project)
        return representation


class WorkflowSnapshotSerializer(serializers.ModelSerializer[WorkflowSnapshot]):
    index = serializers.IntegerField(read_only=True, help_text="Position in this list: restore's step_index.")
    parent_sequence = serializers.IntegerField(source="parent.sequence", read_only=True, allow_null=True)

    class Meta:
        model = WorkflowSnapshot
        fields = [
            "index",
            "sequence",
            "parent_sequence",
            "event",
            "step",
            "step_index",
            "status",
            "data",
            "progress",
            "error",
            "created_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: WorkflowSnapshot) -> dict[str, Any]:
        representation = super().to_representation(instance)
        for field in ("data", "error", "progress"):
            representation[field] = project_paths_public(representation[field], project=self.context.get("project"))
        return representation


class WorkflowStartSerializer(serializers.Serializer[Any]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The types registered when the request (or the schema) is made, not when this module was imported.
        workflow_type = self.fields["workflow_type"]
        assert isinstance(workflow_type, serializers.ChoiceField)  # declared below
        workflow_type.choices = sorted(engine.workflow_types())

    workflow_type = StrictChoiceField(choices=[])
    project_id = ProjectIdField()
    input = FreeFormDictField(required=False, default=dict)
    preferences = FreeFormDictField(required=False, default=dict)


class WorkflowRestoreSerializer(serializers.Serializer[Any]):
    step_index = serializers.IntegerField(help_text="Index into the snapshot list; negative counts from the end.")
    rerun = serializers.BooleanField(required=False, default=False)
    data_patch = FreeFormDictField(
        required=False,
        help_text="A JSON merge patch (RFC 7386) on that snapshot's data; the pipeline checks the result's shape.",
    )
    preferences = FreeFormDictField(
        required=False, help_text="A JSON merge patch on the run's preferences (pause_after, cache, ...)."
    )


class WorkflowContinueSerializer(serializers.Serializer[Any]):
    data_patch = FreeFormDictField(
        required=False,
        help_text="A JSON merge patch (RFC 7386) on the run's data; the pipeline checks the result's shape.",
    )


class WorkflowRedrawSerializer(serializers.Serializer[Any]):
    seed = serializers.IntegerField(
        required=False, min_value=0, max_value=2**31 - 1, help_text="The panel's new seed; a random one if absent."
    )
    prompt_extra = StrictCharField(
        required=False, default="", allow_blank=True, max_length=500, help_text="Added to the panel's prompt."
    )


class WorkflowListCreateView(GenericAPIView[WorkflowState]):
    serializer_class = WorkflowStateSerializer
    queryset = WorkflowState.objects.none()  # for the schema only; get() asks the selector
    filterset_class = WorkflowFilterSet

    @extend_schema(tags=["workflows"], responses=WorkflowStateSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(workflow_list(user=request.user)))
        return self.get_paginated_response(WorkflowStateSerializer(page, many=True).data)

    @extend_schema(tags=["workflows"], request=WorkflowStartSerializer, responses={202: WorkflowStateSerializer})
    def post(self, request: Request) -> Response:
        serializer = WorkflowStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = engine.workflow_start(
            user=authenticated_user(request),
            workflow_type=serializer.validated_data["workflow_type"],
            project_id=serializer.validated_data["project_id"],
            data=serializer.validated_data["input"],
            preferences=serializer.validated_data["preferences"],
        )
        run.refresh_from_db()
        return Response(WorkflowStateSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class WorkflowListCreateNoSlashView(WorkflowListCreateView):
    """``/api/workflows`` without its slash (the seed's spelling); documented once, under the slashed path."""

    schema = None


def _own_outputs(run: WorkflowState) -> dict[str, str]:
    """The run's output files by name, only those in the run's own folder: the storage path comes from the state,
    never the request, and only from the run's own folder, whatever a restored or edited state says."""
    if run.outputs_expired_at is not None:
        return {}  # removed by the output retention
    folder = f"{output_folder(run.project_id, str(run.pk))}/"
    return {
        name: path
        for name, path in workflow_output_files(workflow=run).items()
        if path.startswith(folder) and "/" not in path[len(folder) :]
    }


class WorkflowDetailSerializer(WorkflowStateSerializer):
    output_urls = serializers.SerializerMethodField(
        help_text="Each output file (panel, page) by name: a signed URL that loads without an Authorization header "
        "until it expires (storage.signed_url_max_age); ask again for fresh ones."
    )

    class Meta(WorkflowStateSerializer.Meta):
        fields = [*WorkflowStateSerializer.Meta.fields, "output_urls"]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=serializers.URLField()))
    def get_output_urls(self, instance: WorkflowState) -> dict[str, str]:
        request: Request | None = self.context.get("request")
        absolute_url = request.build_absolute_uri if request is not None else None
        return {
            name: blob_signed_url(name=path, alias=DEFAULT_STORAGE, absolute_url=absolute_url)
            for name, path in sorted(_own_outputs(instance).items())
        }


class WorkflowDetailView(APIView):
    @extend_schema(tags=["workflows"], responses=WorkflowDetailSerializer)
    def get(self, request: Request, workflow_id: str) -> Response:
        run = workflow_get(user=request.user, workflow_id=workflow_id)
        return Response(WorkflowDetailSerializer(run, context={"request": request}).data)


class WorkflowEventsView(APIView):
    """The run's live events (see docs/api.md, "Live events"); the stream ends after its terminal event."""

    content_negotiation_class = AnyContentNegotiation

    @extend_schema(tags=["workflows"], parameters=[LAST_EVENT_ID_PARAMETER], responses=EVENT_STREAM_RESPONSES)
    def get(self, request: Request, workflow_id: str) -> StreamingHttpResponse:
        run = workflow_get(user=request.user, workflow_id=workflow_id)
        return event_stream_response(request, project_key=str(run.project_id), workflow_key=run.pk)


class WorkflowHistorySerializer(serializers.Serializer[Any]):
    workflow_id = serializers.UUIDField()
    snapshots = WorkflowSnapshotSerializer(many=True)


class WorkflowHistoryView(APIView):
    @extend_schema(tags=["workflows"], responses=WorkflowHistorySerializer)
    def get(self, request: Request, workflow_id: str) -> Response:
        run = workflow_get(user=request.user, workflow_id=workflow_id)
        snapshots = list(workflow_snapshots(workflow=run).select_related("parent"))
        for index, snapshot in enumerate(snapshots):
            snapshot.index = index  # type: ignore[attr-defined]  # read by WorkflowSnapshotSerializer's index
        return Response(
            {
                "workflow_id": str(run.pk),
                "snapshots": WorkflowSnapshotSerializer(snapshots, many=True, context={"project": run.project}).data,
            }
        )


def _state(run: WorkflowState) -> dict[str, Any]:
    run.refresh_from_db()
    return WorkflowStateSerializer(run).data


class WorkflowResumeView(APIView):
    @extend_schema(tags=["workflows"], request=None, responses={202: WorkflowStateSerializer})
    def post(self, request: Request, workflow_id: str) -> Response:
        run = workflow_get(user=request.user, workflow_id=workflow_id)
        run = engine.workflow_resume(workflow=run, user=authenticated_user(request))
        return Response(_state(run), status=status.HTTP_202_ACCEPTED)


class WorkflowRestoreView(APIView):
    @extend_schema(tags=["workflows"], request=WorkflowRestoreSerializer, responses={200: WorkflowStateSerializer})
    def post(self, request: Request, workflow_id: str) -> Response:
        run = workflow_get(user=request.user, workflow_id=workflow_id)
        serializer = WorkflowRestoreSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = engine.workflow_restore(
            workflow=run,
            index=serializer.validated_data["step_index"],
            rerun=serializer.validated_data["rerun"],
            user=authenticated_user(request),
            data_patch=serializer.validated_data.get("data_patch"),
            preferences=serializer.validated_data.get("preferences"),
        )
        return Response(_state(run))


class WorkflowContinueView(APIView):
    """An ``awaiting_input`` run goes on (409 ``WORKFLOW_NOT_WAITING`` for any other)."""

    @extend_schema(tags=["workflows"], request=WorkflowContinueSerializer, responses={202: WorkflowStateSerializer})
    def post(self, request: Request, workflow_id: str) -> Response:
        run = workflow_get(user=request.user, workflow_id=workflow_id)
        serializer = WorkflowContinueSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = engine.workflow_continue_run(
            workflow=run, user=authenticated_user(request), data_patch=serializer.validated_data.get("data_patch")
        )
        return Response(_state(run), status=status.HTTP_202_ACCEPTED)


class WorkflowRedrawView(APIView):
    """Redraw panel ``n`` (from 1, as ``panel_001.png``) in a new run: 202 with that run."""

    @extend_schema(
        tags=["workflows"],
        request=WorkflowRedrawSerializer,
        responses={202: WorkflowStateSerializer},
        parameters=[
            OpenApiParameter(
                "panel",
                {"type": "integer", "minimum": 1},
                OpenApiParameter.PATH,
                description="The panel, from 1 (panel_001.png is 1).",
            )
        ],
    )
    def post(self, request: Request, workflow_id: str, panel: int) -> Response:
        run = workflow_get(user=request.user, workflow_id=workflow_id)
        serializer = WorkflowRedrawSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fork, _created = engine.workflow_redraw(
            workflow=run,
            panel=int(panel),
            user=authenticated_user(request),
            seed=serializer.validated_data.get("seed"),
            prompt_extra=serializer.validated_data["prompt_extra"],
        )
        return Response(_state(fork), status=status.HTTP_202_ACCEPTED)


class WorkflowCancelView(APIView):
    @extend_schema(tags=["workflows"], request=None, responses={200: WorkflowStateSerializer})
    def post(self, request: Request, workflow_id: str) -> Response:
        run = workflow_get(user=request.user, workflow_id=workflow_id)
        run = engine.workflow_cancel(workflow=run, user=authenticated_user(request))
        return Response(_state(run))


class WorkflowOutputView(APIView):
    """One output file of a run (a panel or a page), streamed from storage to the run's owner (staff too).

    A panel loads as soon as its unit is done: the URL its ``image_generation_completed`` record carries."""

    content_negotiation_class = AnyContentNegotiation

    @extend_schema(tags=["workflows"], responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request: Request, workflow_id: str, name: str) -> FileResponse:
        run = workflow_get(user=request.user, workflow_id=workflow_id)
        if run.outputs_expired_at is not None:
            raise NotFound(
                f"The outputs of workflow {run.pk} expired (pipelines.output_retention_days).",
                details={"workflow_id": str(run.pk), "name": name, "expired_at": run.outputs_expired_at.isoformat()},
            )
        # Only a name the run itself listed is served (see _own_outputs).
        path = _own_outputs(run).get(name)
        if path is None:
            raise NotFound(
                f"Workflow {run.pk} has no output '{name}'.",
                details={"workflow_id": str(run.pk), "name": name, "suggestion": "See data.outputs of the run."},
            )
        try:
            handle = default_storage.open(path, "rb")
        except FileNotFoundError:
            raise NotFound(
                f"The output '{name}' is missing from storage.", details={"workflow_id": str(run.pk), "name": name}
            ) from None
        return FileResponse(handle, content_type="image/png", filename=name)
