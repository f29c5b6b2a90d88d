"""Fault 5: 50 concurrent re-store requests for one result, on PostgreSQL.

Fifty staff sessions press "re-store" at once while two workers consume, and fifty
attempts race the conditional claim directly: one download, one object.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from generations.models import GenerationResult
from generations.services.storing import StoreOutcome, result_store_image
from tests.conftest import require_service
from tests.faults.helpers import (
    S,
    image_fetches,
    post_generate,
    wait_for_status,
    wait_for_thumbnail,
)
from tests.faults.invariants import assert_no_image_lost, local_objects, upstream_bytes

pytestmark = [
    pytest.mark.faults,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

RACERS = 50


def run_at_once(action: Any, count: int) -> list[Any]:
    """Run `action()` in `count` threads released together; each closes its connection."""
    barrier = threading.Barrier(count, timeout=30)
    outcomes: list[Any] = []
    errors: list[BaseException] = []

    def race() -> None:
        try:
            barrier.wait()
            outcomes.append(action())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racer hung"
    assert not errors, errors
    return outcomes


def fail_storing(result_id: int) -> None:
    GenerationResult.objects.filter(pk=result_id).update(
        storage_status=S.FAILED, storage_error="fetch_unavailable: test", storage_claim=None
    )


def test_fifty_concurrent_restores_download_once_and_store_once(
    start_worker: Any,
    demo: Any,
    settings: Any,
    staff_user: Any,
    token_client: Client,
    image_storage_root: Path,
) -> None:
    require_service(connection.vendor == "postgresql", "the race test needs PostgreSQL")
    # A failed result, the kind a user re-stores; no worker runs yet.
    (result,) = post_generate(token_client, "a contested fox [demo:slow_image=1]")["results"]
    result_id = result["id"]
    fail_storing(result_id)
    demo.clear_request_log()

    # 50 gallery requests at once, then two workers consume what they queued.
    def press_restore() -> int:
        client = Client()
        client.force_login(staff_user)
        return client.post(f"/gallery/{result_id}/restore/").status_code

    assert set(run_at_once(press_restore, RACERS)) == {302}
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    wait_for_status(result_id, (S.STORED,), timeout=60)
    assert len(image_fetches(demo)) == 1
    assert GenerationResult.objects.get(pk=result_id).storage_attempts == 1

    # 50 store attempts straight at the claim, on a result failed again.
    fail_storing(result_id)
    demo.clear_request_log()
    outcomes = run_at_once(lambda: result_store_image(result_id=result_id), RACERS)
    assert Counter(outcomes) == {StoreOutcome.STORED: 1, StoreOutcome.SKIPPED: RACERS - 1}
    assert len(image_fetches(demo)) == 1
    assert GenerationResult.objects.get(pk=result_id).storage_attempts == 2

    wait_for_thumbnail(result_id, timeout=30)  # the workers make it after storing
    objects = local_objects(image_storage_root)
    assert sorted(objects) == [f"generations/{result_id}.jpg", f"thumbnails/{result_id}.webp"]
    assert_no_image_lost(objects=objects, upstream=lambda r: upstream_bytes(demo, r.external_url))
