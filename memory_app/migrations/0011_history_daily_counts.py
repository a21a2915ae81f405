"""Per-day, per-action record counts of each history scope, kept by triggers on the records table.

The triggers exist on both databases the product runs on. PostgreSQL: statement-level triggers with transition
tables, so a bulk insert or a cascade delete of a million rows changes each (scope, day, action) count once, not
once per row. SQLite (no statement-level triggers): one upsert per row. Days are UTC calendar days.
"""

from django.db import migrations, models

RECORDS = "memory_app_historyrecord"
COUNTS = "memory_app_historydailycount"

POSTGRES_FORWARD = f"""
CREATE FUNCTION history_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {COUNTS} (scope, day, action, record_count)
    SELECT COALESCE(project_id, '_system'), (timestamp AT TIME ZONE 'UTC')::date, action, COUNT(*)
    FROM added_rows GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (scope, day, action) DO UPDATE SET record_count = {COUNTS}.record_count + EXCLUDED.record_count;
    RETURN NULL;
END $$;

CREATE FUNCTION history_counts_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH removed AS (
        SELECT COALESCE(project_id, '_system') AS scope, (timestamp AT TIME ZONE 'UTC')::date AS day, action,
               COUNT(*) AS number
        FROM removed_rows GROUP BY 1, 2, 3
    )
    UPDATE {COUNTS} AS counts SET record_count = counts.record_count - removed.number
    FROM removed
    WHERE counts.scope = removed.scope AND counts.day = removed.day AND counts.action = removed.action;
    DELETE FROM {COUNTS} AS counts
    USING (
        SELECT DISTINCT COALESCE(project_id, '_system') AS scope, (timestamp AT TIME ZONE 'UTC')::date AS day, action
        FROM removed_rows
    ) AS removed
    WHERE counts.scope = removed.scope AND counts.day = removed.day AND counts.action = removed.action
      AND counts.record_count <= 0;
    RETURN NULL;
END $$;

CREATE FUNCTION history_counts_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Records are append-only; an UPDATE that changes none of scope, day or action (a user set to NULL when the
    -- user is deleted) leaves the counts as they are, and any other is counted as a removal and an addition.
    IF EXISTS (
        SELECT 1 FROM removed_rows AS before_row FULL JOIN added_rows AS after_row ON before_row.id = after_row.id
        WHERE before_row.id IS NULL OR after_row.id IS NULL
           OR before_row.project_id IS DISTINCT FROM after_row.project_id
           OR before_row.timestamp IS DISTINCT FROM after_row.timestamp
           OR before_row.action IS DISTINCT FROM after_row.action
    ) THEN
        WITH removed AS (
            SELECT COALESCE(project_id, '_system') AS scope, (timestamp AT TIME ZONE 'UTC')::date AS day, action,
                   -COUNT(*) AS number
            FROM removed_rows GROUP BY 1, 2, 3
            UNION ALL
            SELECT COALESCE(project_id, '_system'), (timestamp AT TIME ZONE 'UTC')::date, action, COUNT(*)
            FROM added_rows GROUP BY 1, 2, 3
        ), net AS (
            SELECT scope, day, action, SUM(number) AS number FROM removed GROUP BY 1, 2, 3 HAVING SUM(number) <> 0
        )
        INSERT INTO {COUNTS} (scope, day, action, record_count)
        SELECT scope, day, action, number FROM net ORDER BY 1, 2, 3
        ON CONFLICT (scope, day, action) DO UPDATE SET record_count = {COUNTS}.record_count + EXCLUDED.record_count;
        DELETE FROM {COUNTS} WHERE record_count <= 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER history_counts_insert AFTER INSERT ON {RECORDS}
    REFERENCING NEW TABLE AS added_rows FOR EACH STATEMENT EXECUTE FUNCTION history_counts_add();
CREATE TRIGGER history_counts_delete AFTER DELETE ON {RECORDS}
    REFERENCING OLD TABLE AS removed_rows FOR EACH STATEMENT EXECUTE FUNCTION history_counts_remove();
CREATE TRIGGER history_counts_update AFTER UPDATE ON {RECORDS}
    REFERENCING OLD TABLE AS removed_rows NEW TABLE AS added_rows FOR EACH STATEMENT
    EXECUTE FUNCTION history_counts_move();
"""

POSTGRES_BACKWARD = f"""
DROP TRIGGER IF EXISTS history_counts_insert ON {RECORDS};
DROP TRIGGER IF EXISTS history_counts_delete ON {RECORDS};
DROP TRIGGER IF EXISTS history_counts_update ON {RECORDS};
DROP FUNCTION IF EXISTS history_counts_add();
DROP FUNCTION IF EXISTS history_counts_remove();
DROP FUNCTION IF EXISTS history_counts_move();
"""

# SQLite stores an aware datetime as UTC text ('2026-01-01 09:30:00.000000'); date() reads its day.
_SQLITE_ADD = f"""
    INSERT INTO {COUNTS} (scope, day, action, record_count)
    VALUES (COALESCE(NEW.project_id, '_system'), date(NEW.timestamp), NEW.action, 1)
    ON CONFLICT (scope, day, action) DO UPDATE SET record_count = record_count + 1;
"""
_SQLITE_REMOVE = f"""
    UPDATE {COUNTS} SET record_count = record_count - 1
    WHERE scope = COALESCE(OLD.project_id, '_system') AND day = date(OLD.timestamp) AND action = OLD.action;
    DELETE FROM {COUNTS}
    WHERE scope = COALESCE(OLD.project_id, '_system') AND day = date(OLD.timestamp) AND action = OLD.action
      AND record_count <= 0;
"""
SQLITE_FORWARD = [
    f"CREATE TRIGGER history_counts_insert AFTER INSERT ON {RECORDS} BEGIN {_SQLITE_ADD} END",
    f"CREATE TRIGGER history_counts_delete AFTER DELETE ON {RECORDS} BEGIN {_SQLITE_REMOVE} END",
    f"CREATE TRIGGER history_counts_update AFTER UPDATE OF project_id, timestamp, action ON {RECORDS} "
    f"BEGIN {_SQLITE_REMOVE} {_SQLITE_ADD} END",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS history_counts_insert",
    "DROP TRIGGER IF EXISTS history_counts_delete",
    "DROP TRIGGER IF EXISTS history_counts_update",
]

BACKFILL = {
    "postgresql": f"""
        INSERT INTO {COUNTS} (scope, day, action, record_count)
        SELECT COALESCE(project_id, '_system'), (timestamp AT TIME ZONE 'UTC')::date, action, COUNT(*)
        FROM {RECORDS} GROUP BY 1, 2, 3
    """,
    "sqlite": f"""
        INSERT INTO {COUNTS} (scope, day, action, record_count)
        SELECT COALESCE(project_id, '_system'), date(timestamp), action, COUNT(*)
        FROM {RECORDS} GROUP BY 1, 2, 3
    """,
}


def _statements(vendor: str, *, forward: bool) -> list[str]:
    if vendor == "postgresql":
        return [POSTGRES_FORWARD if forward else POSTGRES_BACKWARD]
    if vendor == "sqlite":
        return SQLITE_FORWARD if forward else SQLITE_BACKWARD
    raise RuntimeError(f"history daily counts: no triggers written for the {vendor} database")


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    # Triggers first, then the counts of the records already there. Creating a trigger locks the records table
    # against writes until the migration's transaction commits, so no record is counted twice or missed.
    for statement in _statements(vendor, forward=True):
        schema_editor.execute(statement)
    schema_editor.execute(BACKFILL[vendor])


def drop_triggers(apps, schema_editor):
    for statement in _statements(schema_editor.connection.vendor, forward=False):
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("memory_app", "0010_manga_shonen_style")]

    operations = [
        migrations.CreateModel(
            name="HistoryDailyCount",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("scope", models.CharField(max_length=64)),
                ("day", models.DateField()),
                ("action", models.SlugField(db_index=False, max_length=64)),
                ("record_count", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("scope", "day", "action"), name="history_daily_count_scope_day_action"
                    )
                ],
            },
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
