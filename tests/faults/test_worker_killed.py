"""Fault 1: a worker killed with SIGKILL while it streams an image.

The dead worker's claim holds for the lease; then the sweep (what beat runs) queues
the result again and another worker stores it: one object, the upstream's bytes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from generations.models import GenerationResult
from generations.tasks import sweep_unstored_images
from tests.conftest import wait_for
from tests.faults.helpers import (
    S,
    age_rows,
    image_fetches,
    post_generate,
    wait_for_status,
    wait_for_thumbnail,
)
from tests.faults.invariants import assert_no_image_lost, local_objects, upstream_bytes

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 3


def test_a_worker_killed_mid_download_is_finished_by_another_after_the_lease(
    start_worker: Any, demo: Any, settings: Any, token_client: Client, image_storage_root: Path
) -> None:
    settings.STORAGE_LEASE_SECONDS = LEASE_SECONDS
    lease = {"STORAGE_LEASE_SECONDS": str(LEASE_SECONDS)}
    doomed = start_worker(**lease)

    (result,) = post_generate(token_client, "a fox, streamed slowly [demo:slow_image=4]")["results"]
    result_id = result["id"]
    wait_for_status(result_id, (S.STORING,), timeout=20)
    wait_for(lambda: image_fetches(demo), timeout=10)
    time.sleep(1)  # well into the 4-second body
    doomed.kill()

    row = GenerationResult.objects.get(pk=result_id)
    assert row.storage_status == S.STORING  # the claim died with the worker
    assert row.storage_attempts == 1
    assert row.image_url == row.external_url
    assert local_objects(image_storage_root) == {}  # nothing half-written

    survivor = start_worker(**lease)
    wait_for(
        lambda: GenerationResult.objects.storable().filter(pk=result_id).exists(),
        timeout=LEASE_SECONDS + 5,
    )
    age_rows([result_id])
    assert sweep_unstored_images() == 1
    wait_for_thumbnail(result_id, timeout=30)

    row.refresh_from_db()
    assert row.storage_attempts == 2
    assert len(image_fetches(demo)) == 2
    objects = local_objects(image_storage_root)
    assert sorted(objects) == [f"generations/{result_id}.jpg", f"thumbnails/{result_id}.webp"]
    assert objects[row.storage_key] == upstream_bytes(demo, row.external_url)
    assert_no_image_lost(objects=objects, upstream=lambda r: upstream_bytes(demo, r.external_url))
    assert survivor.process.poll() is None
