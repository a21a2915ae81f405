from memory_app.admin import conversation, projects  # noqa: F401
