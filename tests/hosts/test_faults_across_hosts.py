"""Faults a single machine never shows, on genvault spread over test hosts.

gunicorn on one host, a Celery worker on each of two others (each with its own
download folder), PostgreSQL, Redis and moto's S3 on a services host, the demo
upstream on a host of its own (`tests.hosts.services`). Each test ends with the fault
suite's checks, run in the web host against the hosts' database and bucket: no image
lost, rows and objects agreeing both ways, `verify_images` clean.
"""

from __future__ import annotations

import pytest

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
