"""A worker killed with SIGKILL while Ark streams a background generation's group.

Nothing already received is lost: every image that arrived before the kill is
recorded, stored by the storing worker, and the generation says `interrupted` (after
its lease, or at once when the broker hands its task to another process). Ark is
asked once: a billed generation is never requested twice.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from generations.models import Generation, GenerationResult
from generations.tasks import sweep_interrupted_generations
from tests.conftest import wait_for
from tests.faults.helpers import SEEDREAM_4, SIZE, wait_for_thumbnail
from tests.faults.invariants import local_objects, upstream_bytes

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 3
# A group of 8 at one image every 1.5 s: 12 s, killed after the second image.
SLOW_GROUP = "a slow group of foxes [demo:latency=1.5]"


def start_background_generation(client: Client) -> int:
    body = {
        "prompt": SLOW_GROUP,
        "modelIds": [SEEDREAM_4],
        "size": SIZE,
        "params": {"max_images": 8},
        "wait": False,
    }
    response = client.post("/api/generate", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content
    return response.json()["generationId"]


def results_so_far(generation_id: int) -> list[GenerationResult]:
    return list(GenerationResult.objects.filter(generation_id=generation_id).order_by("id"))


def generation_posts(demo: Any) -> int:
    return sum(1 for e in demo.request_log if e["method"] == "POST" and "generations" in e["path"])


def pool_children(pid: int) -> list[int]:
    """The worker's pool processes: those whose parent is the worker's main process."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def storing_queues() -> list[str]:
    return [settings.CELERY_TASK_DEFAULT_QUEUE, settings.DERIVATIVES_QUEUE]


def test_a_generator_killed_mid_group_leaves_it_interrupted_with_what_arrived_stored(
    start_worker: Any, demo: Any, settings: Any, token_client: Client, image_storage_root: Path
) -> None:
    # As the Procfile: one worker stores, another calls Ark for background generations.
    start_worker(queues=storing_queues())
    generator = start_worker(
        queues=[settings.GENERATIONS_QUEUE], GENERATION_LEASE_SECONDS=str(LEASE_SECONDS)
    )

    generation_id = start_background_generation(token_client)
    wait_for(lambda: len(results_so_far(generation_id)) >= 2, timeout=30)
    generator.kill()  # the whole worker, main process and pool, as a lost machine

    received = results_so_far(generation_id)
    assert 2 <= len(received) < 8
    assert Generation.objects.get(pk=generation_id).status == Generation.Status.RUNNING

    # Nobody renews the lease now; the sweep beat runs marks the generation.
    wait_for(
        lambda: Generation.objects.lease_expired().filter(pk=generation_id).exists(),
        timeout=LEASE_SECONDS + 5,
    )
    assert sweep_interrupted_generations() == 1
    generation = Generation.objects.get(pk=generation_id)
    assert generation.status == Generation.Status.INTERRUPTED

    # Every image that arrived is kept and stored, byte for byte; none came after.
    for result in received:
        wait_for_thumbnail(result.pk, timeout=30)
    assert results_so_far(generation_id) == received
    objects = local_objects(image_storage_root)
    for result in results_so_far(generation_id):
        assert result.status == GenerationResult.Status.SUCCESS
        assert objects[result.storage_key] == upstream_bytes(demo, result.external_url)
    assert generation_posts(demo) == 1


def test_a_generation_task_delivered_again_after_its_process_died_never_asks_ark_twice(
    start_worker: Any, demo: Any, settings: Any, token_client: Client
) -> None:
    start_worker(queues=storing_queues())
    # A long lease: what marks the generation here is the redelivered task, not the lease.
    generator = start_worker(queues=[settings.GENERATIONS_QUEUE], GENERATION_LEASE_SECONDS="600")

    generation_id = start_background_generation(token_client)
    wait_for(lambda: len(results_so_far(generation_id)) >= 1, timeout=30)
    (pool,) = pool_children(generator.process.pid)
    os.kill(pool, signal.SIGKILL)  # the worker lives on and gives the task out again

    def interrupted() -> bool:
        status = Generation.objects.values_list("status", flat=True).get(pk=generation_id)
        return status == Generation.Status.INTERRUPTED

    wait_for(interrupted, timeout=20)
    assert generation_posts(demo) == 1
    assert b"was begun by a lost worker" in generator.log_path.read_bytes()
    received = results_so_far(generation_id)
    assert received and all(r.status == GenerationResult.Status.SUCCESS for r in received)
    assert generator.process.poll() is None
