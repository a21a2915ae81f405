from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.decorators import api_view, permission_classes, throttle_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request

from memory_app.admin.fonts import lettering_font_view
from memory_app.api.envelope import error_response
from memory_app.api.operations import prometheus_metrics
from memory_app.errors import ComicmemError, ErrorCode
from workflows.api import WorkflowListCreateNoSlashView


class RouteNotFound(ComicmemError):
    code = ErrorCode.NOT_FOUND
    status_code = 404
    default_message = "No API route matches this path."


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@permission_classes([AllowAny])
@throttle_classes([])
def api_route_not_found(request: Request, unmatched: str = "") -> HttpResponse:
    raise RouteNotFound(details={"path": request.path})


api_route_not_found.cls.schema = None

urlpatterns = [
    path("admin/lettering-font", lettering_font_view, name="admin-lettering-font"),
    path("admin/", admin.site.urls),
    # Prometheus scrapes plain text here, outside /api/ and its envelope.
    path("metrics", prometheus_metrics, name="prometheus-metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # Before the catch-all `api/` route; the list also answers without its trailing slash.
    re_path(r"^api/workflows$", WorkflowListCreateNoSlashView.as_view()),
    path("api/workflows/", include("workflows.urls")),
    path("api/", include("memory_app.api.urls")),
    # Last: anything else under /api/ is a 404 in the envelope, in DEBUG too.
    re_path(r"^api/(?P<unmatched>.*)$", api_route_not_found),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error_response(request, RouteNotFound(details={"path": request.path}))
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error_response(request, RuntimeError("unhandled"))
    return defaults.server_error(request)
