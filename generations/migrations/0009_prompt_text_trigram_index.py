"""On PostgreSQL, a trigram index on the prompts, so that searching them stays fast at a
million rows; SQLite has no such index and searches by reading the rows.

The gallery searches with `icontains`, which Django writes for PostgreSQL as
`UPPER("prompt_text"::text) LIKE UPPER('%word%')`: the index is on that very expression,
or the planner would not use it. Built CONCURRENTLY, so a large table keeps taking new
generations while it is made (hence a migration outside a transaction).
"""

from typing import Any

from django.db import migrations

INDEX = "generation_prompt_trgm"


def create_index(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("generations", "Generation")._meta.db_table
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # A build that failed half-way leaves an invalid index under this name: drop it first.
    schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}"')
    schema_editor.execute(
        f'CREATE INDEX CONCURRENTLY "{INDEX}" ON "{table}" '
        'USING gin (UPPER("prompt_text") gin_trgm_ops)'
    )


def drop_index(apps: Any, schema_editor: Any) -> None:
    # The extension stays: other indexes or queries of the database may use it.
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}"')


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("generations", "0008_favorites_and_tags")]

    operations = [migrations.RunPython(create_index, drop_index)]
