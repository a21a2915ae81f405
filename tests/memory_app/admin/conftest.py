# The admin's actions drive the engine: reuse its inline-execution fixtures.
from tests.workflows.conftest import eager, effects_table, run_inline  # noqa: F401
