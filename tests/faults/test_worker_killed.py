"""Fault 1: a worker killed with SIGKILL while it streams an image, or while it makes
the derivatives of images already stored.

The dead worker's claim holds for the lease; then the sweep (what beat runs) queues
the result again and another worker stores it: one object, the upstream's bytes. A
worker killed in the derivatives stage loses no image: they were safe before it
started, and the sweep queues their thumbnails again after a grace.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from generations.models import GenerationResult
from generations.services.storing import StoreOutcome, result_store_image
from generations.tasks import sweep_unstored_images
from generations.upstream.demo.server import render_image
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
from tests.image_host import ImageHost

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


DERIVATIVE_IMAGES = 4


def test_a_derivatives_worker_killed_while_it_works_leaves_the_images_stored_for_the_sweep(
    start_worker: Any,
    image_host: ImageHost,
    settings: Any,
    token_client: Client,
    image_storage_root: Path,
    tmp_path: Path,
) -> None:
    """Storing made the images safe; a worker killed while it decodes them for their
    thumbnails takes nothing with it: each stays stored and served, and the sweep queues
    what it left for another worker."""
    # The workers' folder for their working copies (the test settings put it in the
    # variable folder), watched here to see the worker at work.
    worker_var = tmp_path / "worker-var"
    downloads = worker_var / "downloads"
    settings.IMAGE_FETCH_TEMP_DIR = str(downloads)
    # A 4096x4096 PNG takes a good part of a second to decode whole and shrink.
    data = render_image(
        "a harbour at 4K",
        seed_material="harbour",
        width=4096,
        height=4096,
        image_format="PNG",
        watermark=False,
    )
    ids = [image_host.result_for(f"harbour-{n}.png", data).pk for n in range(DERIVATIVE_IMAGES)]
    # The safe stage, here: each result stored queues its derivatives on the broker.
    for result_id in ids:
        assert result_store_image(result_id=result_id) is StoreOutcome.STORED

    doomed = start_worker(concurrency=1, GENVAULT_TEST_VAR_DIR=str(worker_var))

    def decoding() -> list[Path]:
        return sorted(downloads.glob("fetch-stored-*.part"))

    decoding.__name__ = "the worker to copy a stored image out for its full decode"
    abandoned = wait_for(decoding, timeout=30, interval=0.005)
    doomed.kill()

    rows = list(GenerationResult.objects.filter(pk__in=ids).order_by("pk"))
    assert [row.storage_status for row in rows] == [S.STORED] * len(ids)
    waiting = [row.pk for row in rows if not row.thumbnail_key]
    assert waiting, "the worker made every thumbnail before it was killed"
    for row in rows:
        assert (image_storage_root / row.storage_key).read_bytes() == data
        response = token_client.get(f"/api/images/{row.pk}")
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == data

    # Later: the grace is over and what the dead worker held is left in its folder.
    GenerationResult.objects.filter(pk__in=ids).update(
        stored_at=timezone.now() - timedelta(hours=1)
    )
    for path in abandoned:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    survivor = start_worker(concurrency=1, GENVAULT_TEST_VAR_DIR=str(worker_var))
    assert sweep_unstored_images() == 0  # nothing to store again: only derivatives
    for result_id in waiting:
        wait_for_thumbnail(result_id, timeout=60)

    assert not any(path.exists() for path in abandoned)
    objects = local_objects(image_storage_root)
    assert sorted(objects) == sorted(
        [f"generations/{i}.png" for i in ids] + [f"thumbnails/{i}.webp" for i in ids]
    )
    assert_no_image_lost(objects=objects, upstream=lambda r: data)
    assert survivor.process.poll() is None
