# The headless browser of the admin's page tests, and the engine's inline mode for the data they look at.
from tests.support.browser import browser_page  # noqa: F401
from tests.workflows.conftest import eager  # noqa: F401
