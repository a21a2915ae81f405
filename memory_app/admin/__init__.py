from memory_app.admin import cache, conversation, creative, history, projects, workflow  # noqa: F401
