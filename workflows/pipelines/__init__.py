"""The two real pipelines (seed §5.3). Importing this package registers them with the engine; the workflows
app imports it at start-up, so the web process and every worker know them."""

from workflows.pipelines import comic_generation, text_compression

__all__ = ["comic_generation", "text_compression"]
