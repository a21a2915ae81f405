from memory_app.admin import cache, conversation, creative, history, operations, projects, workflow  # noqa: F401
