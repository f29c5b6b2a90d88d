"""The gallery at 100,000 results against 100, run as a child of run.py.

On a PostgreSQL database of its own (created by the harness, dropped after), with 100
results: time `/gallery/` page 1 and its last page in-process through Django's test
Client as a logged-in staff user, counting queries; then bulk-insert up to the large
count, ANALYZE, and time the same two pages again; then delete back down to the small
count and time it once more (the baseline pools both small passes). Server time is the
time the view takes (the test Client runs the whole middleware stack, no socket).

Usage: python -m bench.gallery --small 100 --large 100000 --reps 7
"""

from __future__ import annotations

import argparse
import math
import time
from datetime import timedelta
from typing import Any

from bench.common import django_setup, median, report

ROWS_PER_GENERATION = 4
BATCH = 5000


def add_results(*, until: int) -> None:
    """Bulk-insert results (four per generation, a mix of storage states) up to `until`."""
    from django.utils import timezone

    from generations.models import Generation, GenerationResult, ImageModel

    S = GenerationResult.StorageStatus
    model = ImageModel.objects.order_by("pk").first()
    have = GenerationResult.objects.count()
    now = timezone.now()
    statuses = [S.STORED, S.STORED, S.STORED, S.PENDING, S.FAILED, S.EXPIRED]
    while have < until:
        batch = min(BATCH, until - have)
        generations = Generation.objects.bulk_create(
            Generation(
                prompt_text=f"bench prompt {have + i} a watercolour fox in the snow",
                created_at=now - timedelta(seconds=until - have - i),
            )
            for i in range(0, batch, ROWS_PER_GENERATION)
        )
        rows = []
        for i in range(batch):
            number = have + i
            status = statuses[number % len(statuses)]
            stored = status == S.STORED
            url = f"https://ark-demo.example/images/{number}.jpeg?X-Tos-Expires=86400"
            rows.append(
                GenerationResult(
                    generation=generations[i // ROWS_PER_GENERATION],
                    model=model,
                    upstream_model_id=model.upstream_model_id if model else "bench",
                    image_index=i % ROWS_PER_GENERATION,
                    status=GenerationResult.Status.SUCCESS,
                    external_url=url,
                    image_url=f"/api/images/{number}" if stored else url,
                    external_url_expires_at=now + timedelta(hours=(number % 30) - 2),
                    params_used={"externalImageUrl": url, "size": "2048x2048"},
                    storage_status=status,
                    storage_backend="local" if stored else "",
                    storage_key=f"generations/{number}.jpg" if stored else "",
                    thumbnail_key=f"thumbnails/{number}.webp" if stored else "",
                    content_type="image/jpeg" if stored else "",
                    byte_size=1_500_000 if stored else None,
                    width=2048 if stored else None,
                    height=2048 if stored else None,
                    created_at=now - timedelta(seconds=until - number),
                )
            )
        GenerationResult.objects.bulk_create(rows, batch_size=BATCH)
        have += batch
    from django.db import connection

    with connection.cursor() as cursor:
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
    pages = {"page_1": "/gallery/", "deep_page": f"/gallery/?before={oldest[-1]}"}
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
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=100_000)
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
    for key in ("page_1", "deep_page"):
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
        }
    )


if __name__ == "__main__":
    main()
