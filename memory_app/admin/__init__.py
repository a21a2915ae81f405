from memory_app.admin import cache, conversation, history, projects  # noqa: F401
