from memory_app.admin import cache, conversation, history, projects, workflow  # noqa: F401
