from memory_app.admin import projects  # noqa: F401
