"""Fault 3: the S3 endpoint stops while a worker is storing.

The attempt and its retry fail and the result ends `failed` with the error, its
external URL kept; once the endpoint is back, a re-store puts the bytes in the bucket.
"""

from __future__ import annotations

from typing import Any

import boto3
import environ
import pytest
from botocore.config import Config
from django.test import Client

from generations.models import GenerationResult
from generations.services.storing import results_restore
from storage_backends.conf import image_storages_from_env
from tests.conftest import wait_for
from tests.faults.helpers import (
    S,
    image_fetches,
    post_generate,
    wait_for_status,
    wait_for_thumbnail,
)
from tests.faults.invariants import assert_no_image_lost, s3_objects, upstream_bytes

pytestmark = [
    pytest.mark.faults,
    pytest.mark.redis,
    pytest.mark.s3,
    pytest.mark.django_db(transaction=True),
]

BUCKET = "genvault-faults"


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "STORAGE_MODE": "s3",
        "STORAGE_S3_ENDPOINT": endpoint,
        "STORAGE_S3_BUCKET": BUCKET,
        "STORAGE_S3_ACCESS_KEY_ID": "genvault-test-key",
        "STORAGE_S3_SECRET_ACCESS_KEY": "genvault-test-secret",
        "STORAGE_S3_REGION": "us-east-1",
    }


def use_s3_here(settings: Any, endpoint: str) -> None:
    """Make this process see the bucket as the active storage too (for the checks)."""
    env = environ.Env()
    env.ENVIRON = s3_env(endpoint)
    mode, entries = image_storages_from_env(env, media_root=str(settings.MEDIA_ROOT))
    settings.STORAGES = {**settings.STORAGES, **entries}
    settings.STORAGE_MODE = mode


def test_s3_down_during_storing_fails_with_the_error_then_restore_succeeds(
    start_worker: Any, demo: Any, settings: Any, token_client: Client, moto_endpoint: Any
) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint.url,
        aws_access_key_id="genvault-test-key",
        aws_secret_access_key="genvault-test-secret",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=BUCKET)
    use_s3_here(settings, moto_endpoint.url)
    worker = start_worker(STORAGE_MAX_ATTEMPTS="2", **s3_env(moto_endpoint.url))

    (result,) = post_generate(token_client, "a fox for the bucket [demo:slow_image=2]")["results"]
    result_id = result["id"]
    wait_for_status(result_id, (S.STORING,), timeout=20)
    wait_for(lambda: image_fetches(demo), timeout=10)
    moto_endpoint.stop()  # gone while the image is still being downloaded

    wait_for_status(result_id, (S.FAILED,), timeout=45)
    row = GenerationResult.objects.get(pk=result_id)
    assert row.storage_attempts == 2  # tried, retried, then gave up
    assert row.storage_error.startswith("could not write"), row.storage_error
    assert "secret" not in row.storage_error.lower()
    assert row.image_url == row.external_url
    assert row.params_used_json()["storageError"] == row.storage_error

    moto_endpoint.start()
    assert s3_objects(client, BUCKET) == {}  # nothing half-written while it was down
    assert results_restore(result_ids=[result_id]).queued == 1
    wait_for_thumbnail(result_id, timeout=30)

    objects = s3_objects(client, BUCKET)
    assert sorted(objects) == [f"generations/{result_id}.jpg", f"thumbnails/{result_id}.webp"]
    assert_no_image_lost(
        objects=objects, upstream=lambda r: upstream_bytes(demo, r.external_url), backend="s3"
    )
    served = token_client.get(f"/api/images/{result_id}")
    assert served.status_code == 302
    assert served["Location"].startswith(moto_endpoint.url)
    assert worker.process.poll() is None
