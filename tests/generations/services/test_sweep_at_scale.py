"""The sweep at a million rows: its query finds the few unstored results through an
index, never by reading every row (PostgreSQL only: its planner is what production runs)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generations.models import GenerationResult
from generations.services.storing import results_due_for_storing
from tests.conftest import require_service
from tests.factories import GenerationResultFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

S = GenerationResult.StorageStatus
ROWS = 1_000_000


def copies_of(template: GenerationResult, count: int, **columns: str) -> None:
    """`count` copies of `template` in one INSERT ... SELECT; `columns` override a
    column with an SQL expression of `n` (1..count)."""
    fields = [f.column for f in GenerationResult._meta.concrete_fields if not f.primary_key]
    table = GenerationResult._meta.db_table
    values = [columns.get(name, f'"{name}"') for name in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{table}" ({", ".join(f"{chr(34)}{n}{chr(34)}" for n in fields)}) '
            f'SELECT {", ".join(values)} FROM "{table}", generate_series(1, %s) AS n '
            "WHERE id = %s",
            [count, template.pk],
        )


def test_the_sweep_uses_an_index_at_a_million_rows_and_takes_the_soonest_deadlines() -> None:
    require_service(connection.vendor == "postgresql", "the query plan is PostgreSQL's")
    hour_ago = timezone.now() - timedelta(hours=1)
    stored = GenerationResultFactory(storage_status=S.STORED, created_at=hour_ago)
    copies_of(stored, ROWS - 1_001)
    waiting = GenerationResultFactory(
        storage_status=S.PENDING,
        created_at=hour_ago,
        external_url_expires_at=timezone.now() + timedelta(hours=20),
    )
    # A thousand more waiting, each expiring a minute later than the one before.
    copies_of(
        waiting,
        999,
        external_url_expires_at="now() + interval '1 hour' + n * interval '1 minute'",
    )
    with connection.cursor() as cursor:
        cursor.execute(f'ANALYZE "{GenerationResult._meta.db_table}"')
    assert GenerationResult.objects.count() == ROWS

    with CaptureQueriesContext(connection) as sweep:
        due = results_due_for_storing(limit=500)

    assert len(due) == 500
    deadlines = list(
        GenerationResult.objects.filter(pk__in=due)
        .order_by("external_url_expires_at")
        .values_list("external_url_expires_at", flat=True)
    )
    soonest = GenerationResult.objects.filter(storage_status=S.PENDING).order_by(
        "external_url_expires_at"
    )[499]
    assert deadlines[-1] <= soonest.external_url_expires_at, "the soonest deadlines go first"
    assert waiting.pk not in due  # it expires last of all

    (query,) = sweep.captured_queries
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {query['sql']}")
        plan = "\n".join(line for (line,) in cursor.fetchall())
    table = GenerationResult._meta.db_table
    assert f"Seq Scan on {table}" not in plan, plan
    assert "Index" in plan, plan
