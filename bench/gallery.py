"""The gallery at a million results against a thousand, run as a child of run.py.

On a PostgreSQL database of its own (created by the harness, dropped after), with the
small count of results: time `/gallery/` page 1, its last page and a prompt search
(a word in one prompt in ten) in-process through Django's test Client as a logged-in
staff user, counting queries; then insert up to the large count (generate_series),
ANALYZE, and time the same three pages again; then delete back down to the small count
and time them once more (the baseline pools both small passes). Server time is the
time the view takes (the test Client runs the whole middleware stack, no socket).

Usage: python -m bench.gallery --small 1000 --large 1000000 --reps 7
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from bench.common import django_setup, median, report

ROWS_PER_GENERATION = 4


ANIMALS = ("fox", "heron", "owl", "hare", "lynx", "otter", "crane", "badger", "wren", "seal")
SEARCH = "heron"  # in one prompt in ten, as a word a person looks for


def add_results(*, until: int) -> None:
    """Insert results (four per generation, a mix of storage states) up to `until`, in
    two INSERT ... SELECT FROM generate_series statements (PostgreSQL: a million rows
    in well under a minute), then ANALYZE."""
    from django.db import connection

    from generations.models import Generation, GenerationResult, ImageModel

    have = GenerationResult.objects.count()
    if have >= until:
        return
    model = ImageModel.objects.order_by("pk").first()
    results, generations = GenerationResult._meta.db_table, Generation._meta.db_table
    first_generation = (
        Generation.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    ) + 1
    first_result = (
        GenerationResult.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    ) + 1
    count = until - have
    generation_count = -(-count // ROWS_PER_GENERATION)
    animals = "ARRAY[" + ",".join(f"'{a}'" for a in ANIMALS) + "]"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {generations}
                (id, prompt_text, size, params, reference_image_url, created_at)
            SELECT g, 'bench prompt ' || g || ' a watercolour '
                      || ({animals})[1 + g %% {len(ANIMALS)}] || ' in the snow',
                   '2048x2048', '{{}}'::jsonb, '',
                   now() - make_interval(secs => %(last)s - g)
            FROM generate_series(%(first)s, %(last)s) AS g
            """,
            {"first": first_generation, "last": first_generation + generation_count - 1},
        )
        # Storage states cycle stored, stored, stored, pending, failed, expired.
        cursor.execute(
            f"""
            INSERT INTO {results}
                (id, generation_id, model_id, upstream_model_id, image_index, status,
                 error_code, error_message, image_url, external_url,
                 external_url_expires_at, params_used, storage_status, storage_backend,
                 storage_key, thumbnail_key, content_type, byte_size, sha256, width,
                 height, storage_attempts, storage_error, created_at, favorite)
            SELECT r, %(first_generation)s + (r - %(first)s) / {ROWS_PER_GENERATION},
                   %(model)s, %(upstream)s, (r - %(first)s) %% {ROWS_PER_GENERATION},
                   'SUCCESS', '', '',
                   CASE WHEN stored THEN '/api/images/' || r ELSE url END, url,
                   now() + make_interval(hours => (r %% 30) - 2),
                   jsonb_build_object('externalImageUrl', url, 'size', '2048x2048'),
                   (ARRAY['stored','stored','stored','pending','failed','expired'])[1 + r %% 6],
                   CASE WHEN stored THEN 'local' ELSE '' END,
                   CASE WHEN stored THEN 'generations/' || r || '.jpg' ELSE '' END,
                   CASE WHEN stored THEN 'thumbnails/' || r || '.webp' ELSE '' END,
                   CASE WHEN stored THEN 'image/jpeg' ELSE '' END,
                   CASE WHEN stored THEN 1500000 END,
                   CASE WHEN stored THEN md5(r::text) || md5(r::text) ELSE '' END,
                   CASE WHEN stored THEN 2048 END, CASE WHEN stored THEN 2048 END,
                   0, '', now() - make_interval(secs => %(last)s - r), false
            FROM (
                SELECT r, r %% 6 < 3 AS stored,
                       'https://ark-demo.example/images/' || r || '.jpeg?X-Tos-Expires=86400'
                           AS url
                FROM generate_series(%(first)s, %(last)s) AS r
            ) AS numbered
            """,
            {
                "first": first_result,
                "last": first_result + count - 1,
                "first_generation": first_generation,
                "model": model.pk if model else None,
                "upstream": model.upstream_model_id if model else "bench",
            },
        )
        for table in (generations, results):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
        cursor.execute("ANALYZE")


def shrink_to(count: int) -> None:
    """Delete every result but the oldest `count` (raw SQL: no 100,000-row collector)."""
    from django.db import connection

    from generations.models import Generation, GenerationResult

    keep = list(GenerationResult.objects.order_by("pk").values_list("pk", flat=True)[:count])
    results, generations = GenerationResult._meta.db_table, Generation._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {results} WHERE id > %s", [keep[-1]])
        cursor.execute(
            f"DELETE FROM {generations} WHERE id NOT IN (SELECT generation_id FROM {results})"
        )
        cursor.execute("VACUUM ANALYZE")


def time_pages(client: Any, *, reps: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from gallery.views import RESULTS_PER_PAGE
    from generations.models import GenerationResult

    last_page = max(1, math.ceil(GenerationResult.objects.count() / RESULTS_PER_PAGE))
    # The index pages by keyset ("older than id N"); the deepest page is the one
    # holding the oldest results.
    oldest = list(
        GenerationResult.objects.order_by("id").values_list("id", flat=True)[: RESULTS_PER_PAGE + 1]
    )
    pages = {
        "page_1": "/gallery/",
        "deep_page": f"/gallery/?before={oldest[-1]}",
        "search": f"/gallery/?q={SEARCH}",
    }
    out: dict[str, Any] = {"last_page": last_page}
    for name, url in pages.items():
        client.get(url)  # warm
        times = []
        for _ in range(reps):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
        out[name] = {
            "seconds": times,
            "median": median(times),
            "queries": len(queries),
            "query_ms": [
                [round(float(q["time"]) * 1000, 2), q["sql"][:160]]
                for q in queries.captured_queries
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
    from django.test import Client
    from django.urls import NoReverseMatch, reverse

    try:
        reverse("gallery:index")
    except NoReverseMatch:
        report({"available": False})
        return
    staff = User.objects.create_user(username="bench-staff", password="x", is_staff=True)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(staff)
    add_results(until=args.small)
    small = time_pages(client, reps=args.reps)
    started = time.perf_counter()
    add_results(until=args.large)
    insert_seconds = time.perf_counter() - started
    large = time_pages(client, reps=args.reps)
    # Back down to the small set and time it again (A-B-A), so that a noisy neighbour
    # during one pass does not decide the ratio; both small passes are pooled.
    shrink_to(args.small)
    again = time_pages(client, reps=args.reps)
    for key in ("page_1", "deep_page", "search"):
        pooled = small[key]["seconds"] + again[key]["seconds"]
        small[key]["seconds"] = pooled
        small[key]["median"] = median(pooled)
    report(
        {
            "available": True,
            "small": small,
            "large": large,
            "small_count": args.small,
            "large_count": args.large,
            "insert_seconds": insert_seconds,
            "search": SEARCH,
        }
    )


if __name__ == "__main__":
    main()
