"""The gallery's tag and favorites filters at 1,000,000 results against 1,000, run as a
child of run.py.

On a PostgreSQL database of its own (created by the harness, dropped after), the
results' tables are copied, with their indexes, into two schemas, `small` and `large`;
each is filled with SQL (`generate_series`, so that a million rows take seconds, not the
ORM's minutes): one result in 20 starred and one in 20 tagged "harbour", beside a
common tag on one in three (so the tag links are a big table too). Then
`/gallery/?favorite=on` and `/gallery/?tag=harbour`, page 1 and the page holding the
oldest matches, are timed in-process through Django's test Client as staff, counting
queries, one request on each schema in turn (the connection's search_path picks it;
each has its own cached header counts): a shared machine's noise falls on both sizes
alike.

Usage: python -m bench.organize --small 1000 --large 1000000 --reps 15
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import django_setup, median, report

STAR_EVERY = 20
RARE_EVERY = 20
COMMON_EVERY = 3
BATCH = 200_000
PAGES = {
    "favorite": "/gallery/?favorite=on",
    "tag": "/gallery/?tag=harbour",
}


def _tables() -> dict[str, str]:
    from generations.models import Generation, GenerationResult, ResultTag, Tag

    return {
        "generation": Generation._meta.db_table,
        "result": GenerationResult._meta.db_table,
        "link": ResultTag._meta.db_table,
        "tag": Tag._meta.db_table,
    }


def add_results(*, until: int) -> None:
    """Insert generations, one stored result each, stars and tag links up to `until`."""
    from django.db import connection

    from generations.models import GenerationResult, ImageModel, Tag

    t = _tables()
    model = ImageModel.objects.order_by("pk").first()
    assert model is not None
    rare, _ = Tag.objects.get_or_create(key="harbour", defaults={"name": "harbour"})
    common, _ = Tag.objects.get_or_create(key="sky", defaults={"name": "sky"})
    have = GenerationResult.objects.count()
    with connection.cursor() as cursor:
        while have < until:
            first, last = have + 1, min(until, have + BATCH)
            cursor.execute(
                f"""
                INSERT INTO {t["generation"]}
                    (prompt_text, size, params, reference_image_url, created_at)
                SELECT 'bench prompt ' || n || ' a watercolour fox in the snow', '2K', '{{}}',
                       '', now() - (%(until)s - n) * interval '1 second'
                FROM generate_series(%(first)s, %(last)s) AS n
                """,
                {"first": first, "last": last, "until": until},
            )
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {t['result']}")
            (before_id,) = cursor.fetchone()
            cursor.execute(
                f"""
                INSERT INTO {t["result"]}
                    (generation_id, model_id, upstream_model_id, image_index, status,
                     error_code, error_message, image_url, external_url, params_used,
                     storage_status, storage_backend, storage_key, thumbnail_key,
                     content_type, byte_size, sha256, width, height, storage_attempts,
                     storage_error, created_at, favorite)
                SELECT g.id, %(model)s, %(upstream)s, 0, 'SUCCESS', '', '',
                       '/api/images/' || g.id, 'https://ark-demo.example/images/' || g.id,
                       '{{"size": "2048x2048"}}', 'stored', 'local',
                       'generations/' || g.id || '.jpg', 'thumbnails/' || g.id || '.webp',
                       'image/jpeg', 1500000, md5(g.id::text) || md5(g.id::text), 2048, 2048,
                       1, '', g.created_at, g.id %% {STAR_EVERY} = 0
                FROM {t["generation"]} g
                WHERE g.id > (SELECT coalesce(max(generation_id), 0) FROM {t["result"]})
                ORDER BY g.id
                """,
                {"model": model.pk, "upstream": model.upstream_model_id},
            )
            cursor.execute(
                f"""
                INSERT INTO {t["link"]} (result_id, tag_id, created_at)
                SELECT r.id, CASE WHEN r.id %% {RARE_EVERY} = 1 THEN %(rare)s ELSE %(common)s END,
                       r.created_at
                FROM {t["result"]} r
                WHERE r.id > %(before)s
                  AND (r.id %% {RARE_EVERY} = 1 OR r.id %% {COMMON_EVERY} = 0)
                """,
                {"rare": rare.pk, "common": common.pk, "before": before_id},
            )
            have = last
        cursor.execute("ANALYZE")


def _oldest_page_cursor(kind: str) -> int:
    """The `before` of the page holding the oldest matches of the filter."""
    from gallery.views import RESULTS_PER_PAGE
    from generations.models import GenerationResult

    results = GenerationResult.objects.order_by("id")
    if kind == "favorite":
        results = results.filter(favorite=True)
    else:
        results = results.filter(tag_links__tag__key="harbour")
    ids = list(results.values_list("id", flat=True)[: RESULTS_PER_PAGE + 1])
    return ids[-1]


_SCHEMA = {"name": "public"}


def _set_search_path(connection: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'SET search_path TO "{_SCHEMA["name"]}", public')


def _on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
    _set_search_path(connection)


def use(schema: str) -> None:
    """Point the connection (and any it opens later) and the header counts' cache at
    `schema`."""
    from django.core.cache import cache
    from django.db import connection

    _SCHEMA["name"] = schema
    cache.key_prefix = f"bench-{schema}"
    if connection.connection is not None:
        _set_search_path(connection)


def make_schemas(names: tuple[str, ...]) -> None:
    """Empty copies of the results' tables, with their indexes, in each schema."""
    from django.db import connection
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connect)
    use("public")
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f'CREATE SCHEMA "{name}"')
            for table in _tables().values():
                cursor.execute(f'CREATE TABLE "{name}".{table} (LIKE public.{table} INCLUDING ALL)')


def time_pages(client: Any, *, schemas: tuple[str, ...], reps: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    urls: dict[str, dict[str, str]] = {schema: {} for schema in schemas}
    for schema in schemas:
        use(schema)
        for kind, url in PAGES.items():
            urls[schema][f"{kind}_page_1"] = url
            urls[schema][f"{kind}_deep_page"] = f"{url}&before={_oldest_page_cursor(kind)}"
    out: dict[str, Any] = {schema: {} for schema in schemas}
    for name in urls[schemas[0]]:
        times: dict[str, list[float]] = {schema: [] for schema in schemas}
        counted: dict[str, Any] = {}
        for schema in schemas:  # warm
            use(schema)
            client.get(urls[schema][name])
        for rep in range(reps):
            for schema in schemas if rep % 2 else schemas[::-1]:
                use(schema)
                url = urls[schema][name]
                with CaptureQueriesContext(connection) as queries:
                    started = time.perf_counter()
                    response = client.get(url)
                    times[schema].append(time.perf_counter() - started)
                assert response.status_code == 200, response.status_code
                assert response.content.count(b'class="card"') == 24, (schema, url)
                counted[schema] = queries
        for schema in schemas:
            out[schema][name] = {
                "seconds": times[schema],
                "median": median(times[schema]),
                "queries": len(counted[schema]),
                "query_ms": [
                    [round(float(q["time"]) * 1000, 2), q["sql"][:200]]
                    for q in counted[schema].captured_queries
                ],
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    django_setup()
    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.test import Client

    staff = User.objects.create_user(username="bench-staff", password="x", is_staff=True)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(staff)
    make_schemas(("small", "large"))
    use("small")
    add_results(until=args.small)
    use("large")
    started = time.perf_counter()
    add_results(until=args.large)
    insert_seconds = time.perf_counter() - started
    cache.clear()
    timed = time_pages(client, schemas=("small", "large"), reps=args.reps)
    report(
        {
            "available": True,
            "small": timed["small"],
            "large": timed["large"],
            "small_count": args.small,
            "large_count": args.large,
            "insert_seconds": insert_seconds,
        }
    )


if __name__ == "__main__":
    main()
