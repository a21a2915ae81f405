from memory_app.admin import cache, conversation, projects  # noqa: F401
