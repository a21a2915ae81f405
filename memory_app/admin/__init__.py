from memory_app.admin import projects, workflow  # noqa: F401
