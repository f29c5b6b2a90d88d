"""The gallery's search at scale on PostgreSQL (its planner is what production runs): a
rare word is found through the trigram index, and the starred and tag filters read
their own indexes from the cursor on, never every row."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, models
from django.test.utils import CaptureQueriesContext

from generations.models import Generation, GenerationResult, ResultTag
from generations.selectors import results_filtered, results_page
from generations.services.organize import results_add_tags
from tests.conftest import require_service
from tests.factories import GenerationResultFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

ROWS = 120_000
RARE_EVERY = 40_000  # the copies numbered 40,000 and 80,000 speak of a quokka
MARKED_EVERY = 1_000  # one result in a thousand is starred and tagged "night sky"


def copies_of(model: type[models.Model], template_id: int, count: int, **columns: str) -> None:
    """`count` copies of one row in one INSERT ... SELECT; `columns` override a column
    with an SQL expression of `n` (1..count)."""
    fields = [f.column for f in model._meta.concrete_fields if not f.primary_key]
    table = model._meta.db_table
    names = ", ".join(f'"{name}"' for name in fields)
    values = ", ".join(columns.get(name, f'"{name}"') for name in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{table}" ({names}) SELECT {values} '
            f'FROM "{table}", generate_series(1, %s) AS n WHERE id = %s',
            [count, template_id],
        )


def one_result_per_generation(template: GenerationResult) -> None:
    """A copy of `template` for every generation that has no result yet, starring and
    tagging one in MARKED_EVERY."""
    fields = [f.column for f in GenerationResult._meta.concrete_fields if not f.primary_key]
    overrides = {"generation_id": "g.id", "favorite": f"(mod(g.id, {MARKED_EVERY}) = 0)"}
    values = ", ".join(overrides.get(name, f'r."{name}"') for name in fields)
    results, generations = GenerationResult._meta.db_table, Generation._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{results}" ({", ".join(f"{chr(34)}{n}{chr(34)}" for n in fields)}) '
            f'SELECT {values} FROM "{generations}" g, "{results}" r '
            f"WHERE r.id = %s AND g.id <> r.generation_id",
            [template.pk],
        )


def plan_of(query: dict[str, Any]) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {query['sql']}")
        return "\n".join(line for (line,) in cursor.fetchall())


def rows_query(queries: list[dict[str, Any]]) -> dict[str, Any]:
    """The query that reads a page's rows (the others find the tag, or prefetch tags)."""
    (query,) = [q for q in queries if 'FROM "generations_generationresult"' in q["sql"]]
    return query


def page_queries(filters: dict[str, Any], **cursor: int) -> tuple[list[GenerationResult], Any]:
    with CaptureQueriesContext(connection) as queries:
        page = results_page(
            results_filtered(filters=filters),
            before=cursor.get("before"),
            after=cursor.get("after"),
            per_page=24,
        )
    return page.results, queries.captured_queries


@pytest.fixture
def many_results() -> None:
    require_service(connection.vendor == "postgresql", "the query plans are PostgreSQL's")
    template = GenerationResultFactory()
    copies_of(
        Generation,
        template.generation_id,
        ROWS - 1,
        prompt_text=(
            f"CASE WHEN mod(n, {RARE_EVERY}) = 0 THEN 'A Quokka on a beach, take ' || n "
            "ELSE 'a lighthouse at dusk, study ' || n END"
        ),
    )
    one_result_per_generation(template)
    marked = GenerationResult.objects.filter(favorite=True).values_list("pk", flat=True)
    results_add_tags(result_ids=list(marked), names=["night sky"])
    # And every result carries a common tag, as a well-tagged gallery's results do.
    common = results_add_tags(result_ids=[template.pk], names=["lighthouse"]).tags[0]
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{ResultTag._meta.db_table}" (created_at, result_id, tag_id) '
            f'SELECT now(), id, %s FROM "{GenerationResult._meta.db_table}" WHERE id <> %s',
            [common.pk, template.pk],
        )
    with connection.cursor() as cursor:
        for model in (Generation, GenerationResult, ResultTag):
            cursor.execute(f'ANALYZE "{model._meta.db_table}"')
    assert GenerationResult.objects.count() == ROWS


def test_a_rare_word_in_the_prompts_is_found_through_the_trigram_index(
    many_results: None,
) -> None:
    shown, queries = page_queries({"q": "quokka"})

    assert len(shown) == 2
    assert all("Quokka" in r.generation.prompt_text for r in shown)
    query = rows_query(queries)
    assert 'UPPER("generations_generation"."prompt_text"::text) LIKE UPPER(' in query["sql"]
    plan = plan_of(query)
    assert "generation_prompt_trgm" in plan, plan
    assert "Seq Scan on generations_generation" not in plan, plan


@pytest.mark.parametrize("filters", [{"favorite": True}, {"tag": "Night Sky"}], ids=str)
def test_starred_and_tag_pages_start_at_their_cursor_in_an_index(
    many_results: None, filters: dict[str, Any]
) -> None:
    first, first_queries = page_queries(filters)
    deep = first[-1].pk - 60 * MARKED_EVERY  # some sixty pages further
    older, older_queries = page_queries(filters, before=deep)

    assert len(first) == len(older) == 24
    assert all(r.favorite and "night sky" in r.tag_names for r in [*first, *older])
    assert older[0].pk < deep
    assert len(first_queries) == len(older_queries)
    plan = plan_of(rows_query(older_queries))
    index = "result_favorite_newest" if "favorite" in filters else "result_tag_once"
    assert index in plan, plan
    # Read in id order from the cursor on: nothing sorts the filter's matching rows.
    assert "Sort" not in plan, plan
    assert "Seq Scan on generations_generationresult" not in plan, plan
