from __future__ import annotations

from django.urls import re_path

from workflows.api import (
    WorkflowCancelView,
    WorkflowContinueView,
    WorkflowDetailView,
    WorkflowEventsView,
    WorkflowHistoryView,
    WorkflowListCreateView,
    WorkflowOutputView,
    WorkflowRedrawView,
    WorkflowRestoreView,
    WorkflowResumeView,
)

# Every route answers with or without its trailing slash, like the rest of /api/.
urlpatterns = [
    re_path(r"^$", WorkflowListCreateView.as_view(), name="workflow-list"),
    re_path(r"^(?P<workflow_id>[^/]+)/?$", WorkflowDetailView.as_view(), name="workflow-detail"),
    re_path(r"^(?P<workflow_id>[^/]+)/events/?$", WorkflowEventsView.as_view(), name="workflow-events"),
    re_path(r"^(?P<workflow_id>[^/]+)/history/?$", WorkflowHistoryView.as_view(), name="workflow-history"),
    re_path(r"^(?P<workflow_id>[^/]+)/resume/?$", WorkflowResumeView.as_view(), name="workflow-resume"),
    re_path(r"^(?P<workflow_id>[^/]+)/restore/?$", WorkflowRestoreView.as_view(), name="workflow-restore"),
    re_path(r"^(?P<workflow_id>[^/]+)/cancel/?$", WorkflowCancelView.as_view(), name="workflow-cancel"),
    re_path(r"^(?P<workflow_id>[^/]+)/continue/?$", WorkflowContinueView.as_view(), name="workflow-continue"),
    re_path(
        r"^(?P<workflow_id>[^/]+)/panels/(?P<panel>[0-9]{1,6})/redraw/?$",
        WorkflowRedrawView.as_view(),
        name="workflow-panel-redraw",
    ),
    re_path(
        r"^(?P<workflow_id>[^/]+)/outputs/(?P<name>[^/]+)/?$", WorkflowOutputView.as_view(), name="workflow-output"
    ),
]
