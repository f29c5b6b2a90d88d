"""Faults a single machine never shows, on genvault spread over test hosts.

gunicorn on one host, a Celery worker on each of two others (each with its own
download folder), PostgreSQL, Redis and moto's S3 on a services host, the demo
upstream on a host of its own (`tests.hosts.services`). Each test ends with the fault
suite's checks, run in the web host against the hosts' database and bucket: no image
lost, rows and objects agreeing both ways, `verify_images` clean.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.processes import wait_until
from tests.hosts.services import Deployment

pytestmark = [pytest.mark.hosts, pytest.mark.faults]


def keys_of(*result_ids: int) -> list[str]:
    return sorted(
        key for i in result_ids for key in (f"generations/{i}.jpg", f"thumbnails/{i}.webp")
    )


def test_an_image_generated_on_the_web_host_is_stored_by_a_worker_host_in_the_bucket(
    deployment: Deployment,
) -> None:
    deployment.start_workers(1, 2)
    result_ids = [*deployment.generate("a fox"), *deployment.generate("a heron")]

    deployment.wait_settled(result_ids, timeout=40)

    assert deployment.object_keys() == keys_of(*result_ids)
    checked = deployment.check_invariants()
    assert checked["counts"] == {"stored": 2}


def test_a_worker_host_cut_off_mid_download_loses_its_claim_to_the_other_host(
    deployment: Deployment,
) -> None:
    """The cut host's download stalls; its claim runs out, the sweep queues the result
    again, the other host stores it. Back on the network, the cut host's late record
    is refused by the claim: one object, the upstream's bytes."""
    (cut_worker,) = deployment.start_workers(1)
    (result_id,) = deployment.generate("a fox, streamed slowly [demo:slow_image=8]")
    deployment.wait_status([result_id], "storing", timeout=20)
    wait_until(deployment.image_fetches, timeout=10, what="the download to start")
    time.sleep(1)  # well into the 8-second body
    deployment.worker_hosts[0].cut()

    deployment.start_workers(2)
    deployment.wait_lease_out([result_id])
    deployment.age([result_id])
    assert deployment.sweep() == 1
    deployment.wait_settled([result_id], timeout=40)
    assert deployment.object_keys() == keys_of(result_id)

    deployment.worker_hosts[0].restore()
    wait_until(
        lambda: (
            "claim lost before recording" in cut_worker.log()
            or f"result {result_id} not stored" in cut_worker.log()
        ),
        timeout=90,
        what="the cut host's attempt to end",
    )
    row = deployment.results([result_id])[result_id]
    assert row["status"] == "stored"
    assert row["attempts"] >= 2
    assert cut_worker.running
    assert deployment.object_keys() == keys_of(result_id)
    assert deployment.check_invariants()["counts"] == {"stored": 1}
