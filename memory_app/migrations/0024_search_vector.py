"""PostgreSQL: the words of each index row as a stored tsvector (a generated column), with the GIN index on it.

Ranking read ``to_tsvector('simple', tokens)`` again for every matching row (the recheck and ts_rank_cd each
parsed the text anew); the stored vector is parsed once, when the row is written. Django does not know the
column: the database fills it, and only the search's own SQL reads it. SQLite keeps its FTS5 table.
"""

from django.db import migrations

ENTRIES = "memory_app_searchentry"

POSTGRES_FORWARD = [
    f"ALTER TABLE {ENTRIES} ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, tokens)) STORED",
    f"CREATE INDEX search_vector_gin ON {ENTRIES} USING gin (search_vector)",
    "DROP INDEX IF EXISTS search_tokens_tsv",
]
POSTGRES_BACKWARD = [
    f"CREATE INDEX search_tokens_tsv ON {ENTRIES} USING gin (to_tsvector('simple', tokens))",
    "DROP INDEX IF EXISTS search_vector_gin",
    f"ALTER TABLE {ENTRIES} DROP COLUMN IF EXISTS search_vector",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for statement in statements:
                schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("memory_app", "0023_search_index")]

    operations = [migrations.RunPython(_run(POSTGRES_FORWARD), _run(POSTGRES_BACKWARD))]
