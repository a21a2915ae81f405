from memory_app.models.project import PROJECT_ID_PATTERN, Project, validate_project_id

__all__ = ["PROJECT_ID_PATTERN", "Project", "validate_project_id"]
