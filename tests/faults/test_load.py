"""Load: 200 `/api/generate` calls from 20 concurrent clients, gunicorn and two workers.

In demo mode: no 5xx, every result stored, no image lost. The time per request is
printed and written to test-artifacts/reliability-load.json, which the README's
reliability section quotes.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection

from tests.faults.helpers import SIZE, S, timed_generate, wait_all_settled
from tests.faults.invariants import assert_no_image_lost, local_objects, upstream_bytes
from tests.faults.processes import REPO

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

REQUESTS = 200
CLIENTS = 20
ARTIFACT = REPO / "test-artifacts" / "reliability-load.json"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def test_two_hundred_generates_from_twenty_clients(
    start_gunicorn: Any,
    start_worker: Any,
    demo: Any,
    api_token: str,
    image_storage_root: Path,
) -> None:
    start_worker(concurrency=1)
    start_worker(concurrency=1)
    web = start_gunicorn(workers=2)
    # One keep-alive session per client thread, used by that thread alone: a session
    # shared between threads leaves connections idle past gunicorn's keep-alive, and
    # reusing one just as the server closes it is a client-side race, not our server.
    clients = threading.local()

    def client_session() -> requests.Session:
        if not hasattr(clients, "session"):
            clients.session = requests.Session()
            clients.session.headers["Authorization"] = f"Bearer {api_token}"
        return clients.session

    def call(n: int) -> tuple[int, float, list[int]]:
        session = client_session()
        response, elapsed = timed_generate(session, web.url, f"load test image {n}", timeout=60)
        ids = [r["id"] for r in response.json()["results"]] if response.ok else []
        return response.status_code, elapsed, ids

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        answers = list(pool.map(call, range(REQUESTS)))
    wall = time.monotonic() - started

    statuses = [status for status, _, _ in answers]
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses == [200] * REQUESTS, statuses
    result_ids = [result_id for _, _, ids in answers for result_id in ids]
    assert len(result_ids) == REQUESTS

    wait_all_settled(result_ids, timeout=120)
    stored_after = time.monotonic() - started
    counts = assert_no_image_lost(
        objects=local_objects(image_storage_root),
        upstream=lambda r: upstream_bytes(demo, r.external_url),
    )
    assert counts == {S.STORED: REQUESTS}

    latencies = [elapsed for _, elapsed, _ in answers]
    figures = {
        "requests": REQUESTS,
        "concurrent_clients": CLIENTS,
        "gunicorn_workers": 2,
        "celery_workers": 2,
        "database": connection.vendor,
        "image_size": SIZE,
        "server_errors": 0,
        "results_stored": counts[S.STORED],
        "images_lost": 0,
        "latency_seconds": {
            "mean": round(statistics.mean(latencies), 3),
            "p50": round(percentile(latencies, 0.50), 3),
            "p95": round(percentile(latencies, 0.95), 3),
            "max": round(max(latencies), 3),
        },
        "requests_per_second": round(REQUESTS / wall, 1),
        "all_requests_answered_seconds": round(wall, 2),
        "all_images_stored_seconds": round(stored_after, 2),
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    name = ARTIFACT.with_name(f"reliability-load-{connection.vendor}.json")
    for path in (ARTIFACT, name):
        path.write_text(json.dumps(figures, indent=2) + "\n")
    print("\nload:", json.dumps(figures))
