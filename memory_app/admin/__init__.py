from memory_app.admin import cache, conversation, history, operations, projects, workflow  # noqa: F401
