from memory_app.admin import cache, projects  # noqa: F401
