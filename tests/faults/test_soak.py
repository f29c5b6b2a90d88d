"""The soak: generations from 20 clients for minutes, with faults at random moments.

gunicorn and two workers on our own Redis, with the beat's sweep running; while 20
clients generate at a steady pace, a seeded schedule kills workers (SIGKILL, then a
replacement starts), stops one (SIGSTOP past its lease, then SIGCONT) and restarts the
broker (its queue forgotten). The schedule is printed with its seed; set
`GENVAULT_SOAK_SEED` to replay a failing run. At the end: no 5xx, every image stored
with the upstream's bytes and before its external URL died, no orphan, and the
figures written to test-artifacts/soak.json.

The test suite runs the short form (200 generations, about a minute and a half);
`make soak` runs the full one (`GENVAULT_SOAK=full`: 2,000 generations over about ten
minutes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.db import close_old_connections, connection
from django.db.models import F, Max

from generations.models import GenerationResult
from generations.tasks import sweep_unstored_images
from tests.faults.helpers import S, timed_generate, wait_all_settled
from tests.faults.invariants import DEMO_IMAGE_RE, assert_no_image_lost, local_objects
from tests.faults.processes import REPO

pytestmark = [
    pytest.mark.faults,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    # The broker is restarted: our own Redis (the machine's RabbitMQ is never stopped).
    pytest.mark.parametrize("broker", ["redis"], indirect=True),
]

FULL = os.environ.get("GENVAULT_SOAK") == "full"
GENERATIONS = 2000 if FULL else 200
SECONDS = 600 if FULL else 60
FAULTS = 12 if FULL else 4
CLIENTS = 20
LEASE_SECONDS = 6
SWEEP_SECONDS = 2
ARTIFACT = REPO / "test-artifacts" / "soak.json"
KINDS = ("worker killed", "worker stuck", "broker restarted")


@dataclass
class Fault:
    at: float  # seconds after the start
    kind: str


def schedule(seed: int) -> list[Fault]:
    """FAULTS moments within the first 80% of the run, every kind at least once."""
    rng = random.Random(seed)
    kinds = [*KINDS, *(rng.choice(KINDS) for _ in range(FAULTS - len(KINDS)))]
    rng.shuffle(kinds)
    moments = sorted(rng.uniform(0.1, 0.8) * SECONDS for _ in kinds)
    return [Fault(at=round(at, 1), kind=kind) for at, kind in zip(moments, kinds, strict=True)]


def test_a_soak_with_faults_at_random_moments_loses_no_image(
    settings: Any,
    start_gunicorn: Any,
    start_worker: Any,
    broker: Any,
    demo: Any,
    api_token: str,
    image_storage_root: Path,
) -> None:
    seed = int(os.environ.get("GENVAULT_SOAK_SEED") or random.SystemRandom().randrange(10**6))
    faults = schedule(seed)
    print(f"\nsoak: seed {seed}; faults: {[(f.at, f.kind) for f in faults]}")
    # The sweep runs here as the beat would, with a lease and a settling time short
    # enough for a run of minutes; the workers hold their claims for the same lease.
    settings.STORAGE_LEASE_SECONDS = LEASE_SECONDS
    settings.STORAGE_SWEEP_SETTLE_SECONDS = 3
    settings.CELERY_TASK_TIME_LIMIT = LEASE_SECONDS
    worker_env = {"STORAGE_LEASE_SECONDS": str(LEASE_SECONDS)}
    workers = [start_worker(concurrency=1, **worker_env) for _ in range(2)]
    web = start_gunicorn(workers=2)

    done = threading.Event()

    def sweep_like_the_beat() -> None:
        while not done.wait(SWEEP_SECONDS):
            try:
                sweep_unstored_images()
            except Exception as exc:  # the broker restarting: the next sweep queues them
                print(f"soak: sweep skipped: {exc}")
            finally:
                close_old_connections()
        connection.close()

    clients = threading.local()
    pace = CLIENTS * SECONDS / GENERATIONS  # each client's seconds between calls
    started = time.monotonic()

    def call(n: int) -> tuple[int, list[int]]:
        if not hasattr(clients, "session"):
            clients.session = requests.Session()
            clients.session.headers["Authorization"] = f"Bearer {api_token}"
        time.sleep(max(0.0, started + (n // CLIENTS) * pace - time.monotonic()))
        response, _ = timed_generate(clients.session, web.url, f"soak image {n}", timeout=60)
        ids = [r["id"] for r in response.json()["results"]] if response.ok else []
        return response.status_code, ids

    def inject(fault: Fault) -> None:
        time.sleep(max(0.0, started + fault.at - time.monotonic()))
        print(f"soak: {time.monotonic() - started:6.1f}s {fault.kind}")
        if fault.kind == "worker killed":
            victim = workers.pop(0)
            os.killpg(victim.process.pid, signal.SIGKILL)
            victim.process.wait(timeout=10)
            workers.append(start_worker(concurrency=1, **worker_env))
        elif fault.kind == "worker stuck":
            os.killpg(workers[0].process.pid, signal.SIGSTOP)
            time.sleep(LEASE_SECONDS + 2)
            os.killpg(workers[0].process.pid, signal.SIGCONT)
        else:
            broker.stop()
            time.sleep(2)
            broker.start()

    sweeper = threading.Thread(target=sweep_like_the_beat, daemon=True)
    sweeper.start()
    try:
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            answers = pool.map(call, range(GENERATIONS))
            for fault in faults:
                inject(fault)
            answered = list(answers)
        wall = time.monotonic() - started
        statuses = [status for status, _ in answered]
        assert not [s for s in statuses if s >= 500], statuses
        assert statuses == [200] * GENERATIONS, statuses
        result_ids = [result_id for _, ids in answered for result_id in ids]
        assert len(result_ids) == GENERATIONS
        wait_all_settled(result_ids, timeout=180)
    finally:
        done.set()
        sweeper.join(timeout=30)
    settled_after = time.monotonic() - started

    compared = 0

    def upstream(result: GenerationResult) -> bytes | None:
        """The upstream's bytes while the demo still holds them (it keeps the newest 500:
        a soak makes more); the stored SHA-256 and size are checked for every image."""
        nonlocal compared
        match = DEMO_IMAGE_RE.match(urlsplit(result.external_url).path)
        assert match, result.external_url
        held = demo.stored_image(match[1])
        if held is None:
            return None
        compared += 1
        return bytes(held.body)

    counts = assert_no_image_lost(objects=local_objects(image_storage_root), upstream=upstream)
    assert counts == {S.STORED: GENERATIONS}
    stored = GenerationResult.objects.filter(pk__in=result_ids)
    late = stored.filter(stored_at__gt=F("external_url_expires_at")).count()
    assert late == 0, f"{late} images stored after their external URL died"
    slowest = stored.aggregate(slowest=Max(F("stored_at") - F("created_at")))["slowest"]

    figures = {
        "seed": seed,
        "generations": GENERATIONS,
        "images": counts[S.STORED],
        "images_compared_with_the_upstream": compared,
        "clients": CLIENTS,
        "faults_injected": len(faults),
        "faults": [f"{f.at}s {f.kind}" for f in faults],
        "server_errors": 0,
        "images_lost": 0,
        "orphans": 0,
        "slowest_time_to_stored_seconds": round(slowest.total_seconds(), 1),
        "all_answered_seconds": round(wall, 1),
        "all_stored_seconds": round(settled_after, 1),
        "database": connection.vendor,
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    name = f"soak-{'full' if FULL else 'short'}-{connection.vendor}.json"
    for path in (ARTIFACT, ARTIFACT.with_name(name)):
        path.write_text(json.dumps(figures, indent=2) + "\n")
    print("soak:", json.dumps(figures))
