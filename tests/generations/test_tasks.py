"""The storing task under a real Celery worker process on Redis."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import requests
from django.test import Client

from generations.models import GenerationResult
from generations.tasks import sweep_unstored_images
from tests.conftest import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

S = GenerationResult.StorageStatus


def post_generate(client: Client, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {
        "prompt": prompt,
        "modelIds": ["doubao-seedream-4-0-250828"],
        "size": "1280x720",
        **extra,
    }
    response = client.post("/api/generate", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def test_generate_then_the_worker_stores_the_image(
    celery_worker: Any, demo: Any, token_client: Client
) -> None:
    body = post_generate(token_client, "a red fox in snow")
    (result,) = body["results"]
    # The request did not wait for storage (the worker may have claimed it already).
    assert result["storageStatus"] in ("pending", "storing")
    upstream_bytes = requests.get(result["externalImageUrl"], timeout=10).content

    def stored() -> GenerationResult | None:
        row = GenerationResult.objects.get(pk=result["id"])
        return row if row.storage_status == S.STORED else None

    row = wait_for(stored, timeout=30)
    assert row.sha256 == hashlib.sha256(upstream_bytes).hexdigest()
    polled = token_client.get(f"/api/generations/{body['generationId']}").json()["results"][0]
    assert polled["storageStatus"] == "stored"
    assert polled["imageUrl"] == f"http://testserver/api/images/{row.pk}"
    assert polled["externalImageUrl"] == result["externalImageUrl"]
    served = token_client.get(f"/api/images/{row.pk}")
    assert b"".join(served.streaming_content) == upstream_bytes


def test_the_worker_survives_a_hostile_image_and_records_why(
    celery_worker: Any, demo: Any, token_client: Client
) -> None:
    body = post_generate(token_client, "a trap [demo:html]")
    result_id = body["results"][0]["id"]

    def settled() -> GenerationResult | None:
        row = GenerationResult.objects.get(pk=result_id)
        return row if row.storage_status == S.FAILED else None

    row = wait_for(settled, timeout=30)
    assert row.storage_error.startswith("not_an_image")
    assert row.image_url == row.external_url
    # The worker is still alive and stores the next one.
    good = post_generate(token_client, "a good fox")["results"][0]["id"]
    wait_for(lambda: GenerationResult.objects.get(pk=good).storage_status == S.STORED, timeout=30)
    assert celery_worker.process.poll() is None


def test_the_sweep_requeues_results_left_pending(
    celery_worker: Any, demo: Any, settings: Any
) -> None:
    """A result whose task was never queued (broker down at the time) is stored by the sweep."""
    from generations.models import Generation, ImageModel
    from generations.upstream.ark import client_for

    model = ImageModel.objects.get(upstream_model_id="doubao-seedream-4-0-250828")
    # Record a result the way generation_create does, but without queueing its task.
    (item,) = client_for(model).generate(
        model_id=model.upstream_model_id,
        prompt="forgotten fox",
        size="1280x720",
        params={},
        image=None,
        capabilities=model.capabilities,
    )
    generation = Generation.objects.create(prompt_text="forgotten fox")
    row = GenerationResult.objects.create(
        generation=generation,
        model=model,
        upstream_model_id=model.upstream_model_id,
        status=GenerationResult.Status.SUCCESS,
        external_url=item.url,
        image_url=item.url,
        external_url_expires_at=item.expires_at,
        storage_status=S.PENDING,
        created_at="2026-01-01T00:00:00Z",
    )
    assert sweep_unstored_images() == 1
    wait_for(lambda: GenerationResult.objects.get(pk=row.pk).storage_status == S.STORED, timeout=30)


def test_the_worker_makes_the_thumbnail_after_storing(
    celery_worker: Any, demo: Any, token_client: Client, image_storage_root: Any
) -> None:
    """One worker takes both queues: the image is stored, then given its thumbnail."""
    from PIL import Image

    result_id = post_generate(token_client, "a fox with a thumbnail")["results"][0]["id"]

    def thumbnailed() -> GenerationResult | None:
        row = GenerationResult.objects.get(pk=result_id)
        return row if row.has_thumbnail else None

    row = wait_for(thumbnailed, timeout=30)
    assert row.storage_status == S.STORED
    with Image.open(image_storage_root / row.thumbnail_key) as thumbnail:
        assert (thumbnail.format, max(thumbnail.size)) == ("WEBP", 512)
    served = token_client.get(f"/api/images/{row.pk}/thumbnail")
    assert served.status_code == 200


def test_the_sweep_makes_the_thumbnail_a_dead_derivatives_task_did_not(
    celery_worker: Any, settings: Any, image_storage_root: Any
) -> None:
    """Stored, but its derivatives task died with its worker: nothing else will queue it."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import GenerationResultFactory, mark_stored

    row = mark_stored(GenerationResultFactory(), thumbnail=False)
    grace = max(settings.STORAGE_LEASE_SECONDS, settings.CELERY_TASK_TIME_LIMIT)
    GenerationResult.objects.filter(pk=row.pk).update(
        stored_at=timezone.now() - timedelta(seconds=grace + 60)
    )
    assert not row.has_thumbnail

    sweep_unstored_images()

    made = wait_for(lambda: GenerationResult.objects.get(pk=row.pk).has_thumbnail, timeout=30)
    assert made
    row.refresh_from_db()
    assert row.storage_status == S.STORED
    assert (image_storage_root / row.thumbnail_key).read_bytes()[8:12] == b"WEBP"
