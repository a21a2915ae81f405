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
