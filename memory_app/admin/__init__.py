from django.contrib import admin

from memory_app.admin import (  # noqa: F401
    cache,
    conversation,
    creative,
    history,
    operations,
    projects,
    webhooks,
    workflow,
)

# The index links to the staff dashboard (operations.MetricSnapshotAdmin.dashboard_view).
admin.site.index_template = "admin/memory_app/index.html"
