from memory_app.admin import history, projects  # noqa: F401
