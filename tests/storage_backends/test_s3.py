"""Storing into S3 for real: moto's server is an HTTP endpoint on loopback.

The store service writes through django-storages and boto3 to the moto server; the
stable image URL redirects to a presigned URL (or the public base URL) that serves
the same bytes; an endpoint that is down leaves the external URL in place.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import requests
from django.test import Client

from generations.models import GenerationResult, ImageModel
from generations.services.derivatives import DerivativesOutcome, result_make_derivatives
from generations.services.generate import generation_create
from generations.services.storing import StoreOutcome, result_store_image

pytestmark = [pytest.mark.django_db, pytest.mark.s3]

S = GenerationResult.StorageStatus


def generate(prompt: str = "a lighthouse at dusk") -> GenerationResult:
    model = ImageModel.objects.get(upstream_model_id="doubao-seedream-4-0-250828")
    generation = generation_create(user=None, models=[model], prompt_text=prompt, size="1280x720")
    result = generation.results.get()
    assert result.status == GenerationResult.Status.SUCCESS, result.error_message
    return result


def test_a_result_is_stored_in_the_bucket_and_served_through_a_presigned_redirect(
    demo: Any, moto_s3: Any, token_client: Client
) -> None:
    moto_s3.use_as_active()
    result = generate()
    upstream_bytes = requests.get(result.external_url, timeout=10).content

    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED

    result.refresh_from_db()
    assert result.storage_status == S.STORED
    assert result.storage_backend == "s3"
    assert result.storage_key == f"generations/{result.pk}.jpg"
    assert result.sha256 == hashlib.sha256(upstream_bytes).hexdigest()
    assert moto_s3.get(result.storage_key) == upstream_bytes
    assert result_make_derivatives(result_id=result.pk) is DerivativesOutcome.MADE
    result.refresh_from_db()
    assert moto_s3.keys() == sorted([result.storage_key, result.thumbnail_key])
    assert result.image_url == f"/api/images/{result.pk}"  # never a presigned URL in the row

    response = token_client.get(f"/api/images/{result.pk}")
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(f"{moto_s3.endpoint_url}/{moto_s3.bucket}/{result.storage_key}?")
    assert "X-Amz-Signature=" in location
    served = requests.get(location, timeout=10)
    assert served.status_code == 200
    assert served.content == upstream_bytes

    thumb = token_client.get(f"/api/images/{result.pk}/thumbnail")
    assert thumb.status_code == 302
    assert requests.get(thumb["Location"], timeout=10).content[8:12] == b"WEBP"


def test_with_a_public_base_url_the_redirect_goes_to_base_slash_key(
    demo: Any, moto_s3: Any, token_client: Client
) -> None:
    moto_s3.use_as_active(STORAGE_PUBLIC_BASE_URL="https://cdn.example.test/images/")
    result = generate()
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED
    result.refresh_from_db()

    response = token_client.get(f"/api/images/{result.pk}")

    assert response.status_code == 302
    assert response["Location"] == f"https://cdn.example.test/images/{result.storage_key}"


def test_an_s3_endpoint_that_is_down_keeps_the_external_url_and_records_the_error(
    demo: Any, moto_s3: Any, closed_port: int, token_client: Client
) -> None:
    moto_s3.use_as_active(STORAGE_S3_ENDPOINT=f"http://127.0.0.1:{closed_port}")
    model = ImageModel.objects.get(upstream_model_id="doubao-seedream-4-0-250828")

    response = token_client.post(
        "/api/generate",
        {"prompt": "a harbour in fog", "modelIds": [model.pk], "size": "1280x720"},
        content_type="application/json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["results"][0]["status"] == "SUCCESS"
    result_id = body["results"][0]["id"]
    external = body["results"][0]["externalImageUrl"]
    assert external

    assert result_store_image(result_id=result_id, will_retry=False) is StoreOutcome.FAILED

    result = GenerationResult.objects.get(pk=result_id)
    assert result.storage_status == S.FAILED
    assert result.image_url == external
    assert result.external_url == external
    assert result.storage_error
    assert result.params_used_json()["storageError"] == result.storage_error
    assert result.storage_key == ""
    assert moto_s3.keys() == []
    # Not stored yet: the stable URL still leads to the live external image.
    redirect = token_client.get(f"/api/images/{result_id}")
    assert redirect.status_code == 302
    assert redirect["Location"] == external


def stored_in_the_bucket() -> GenerationResult:
    result = generate("a reference to be")
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED
    result.refresh_from_db()
    return result


def sent_references(demo: Any) -> list[Any]:
    return [e["json"].get("image") for e in demo.request_log if e["method"] == "POST"]


def test_a_result_in_a_private_bucket_is_handed_to_ark_as_data_never_a_presigned_url(
    demo: Any, moto_s3: Any, token_client: Client
) -> None:
    import base64

    moto_s3.use_as_active()
    reference = stored_in_the_bucket()
    demo.clear_request_log()

    response = token_client.post(
        "/api/generate",
        {
            "prompt": "the same, at night",
            "modelIds": [reference.model_id],
            "image": f"result:{reference.pk}",
        },
        content_type="application/json",
    )

    assert response.status_code == 200, response.content
    (sent,) = sent_references(demo)
    assert (
        sent
        == "data:image/jpeg;base64," + base64.b64encode(moto_s3.get(reference.storage_key)).decode()
    )
    assert "X-Amz-" not in json.dumps(demo.request_log)


def test_a_result_in_a_public_bucket_is_handed_to_ark_at_its_public_url(
    demo: Any, moto_s3: Any, token_client: Client
) -> None:
    moto_s3.use_as_active(STORAGE_PUBLIC_BASE_URL="https://cdn.example.test/images/")
    reference = stored_in_the_bucket()
    demo.clear_request_log()

    response = token_client.post(
        "/api/generate",
        {
            "prompt": "the same, at night",
            "modelIds": [reference.model_id],
            "image": f"result:{reference.pk}",
        },
        content_type="application/json",
    )

    assert response.status_code == 200, response.content
    assert sent_references(demo) == [f"https://cdn.example.test/images/{reference.storage_key}"]
