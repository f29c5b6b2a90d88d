"""The stable image route: bytes, ranges, validators, downloads and redirects."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from generations.models import GenerationResult
from storage_backends.images import image_key, save_object_bytes, thumbnail_key
from tests.factories import GenerationResultFactory, jpeg_bytes

pytestmark = pytest.mark.django_db

S = GenerationResult.StorageStatus


@pytest.fixture
def stored() -> tuple[GenerationResult, bytes]:
    data = jpeg_bytes(320, 200)
    result = GenerationResultFactory(generation__prompt_text='A "fox" / in ../snow; rm -rf')
    key = image_key(result_id=result.pk, extension="jpg")
    save_object_bytes(backend="local", key=key, data=data)
    save_object_bytes(
        backend="local",
        key=thumbnail_key(result_id=result.pk),
        data=b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    )
    GenerationResult.objects.filter(pk=result.pk).update(
        storage_status=S.STORED,
        storage_backend="local",
        storage_key=key,
        thumbnail_key=thumbnail_key(result_id=result.pk),
        content_type="image/jpeg",
        byte_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        image_url=f"/api/images/{result.pk}",
    )
    result.refresh_from_db()
    return result, data


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_serves_the_bytes_with_validators(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, data = stored
    response = staff_client.get(f"/api/images/{result.pk}")
    assert response.status_code == 200
    assert body(response) == data
    assert response["Content-Type"] == "image/jpeg"
    assert response["Content-Length"] == str(len(data))
    assert response["ETag"] == f'"{result.sha256}"'
    assert "max-age" in response["Cache-Control"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Accept-Ranges"] == "bytes"


def test_if_none_match_answers_304(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    response = staff_client.get(f"/api/images/{result.pk}", HTTP_IF_NONE_MATCH=f'"{result.sha256}"')
    assert response.status_code == 304
    assert response.content == b""
    other = staff_client.get(f"/api/images/{result.pk}", HTTP_IF_NONE_MATCH='"something-else"')
    assert other.status_code == 200


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-50", -50, None)],
)
def test_range_requests_get_206(
    staff_client: Client,
    stored: tuple[GenerationResult, bytes],
    header: str,
    start: int,
    end: int | None,
) -> None:
    result, data = stored
    response = staff_client.get(f"/api/images/{result.pk}", HTTP_RANGE=header)
    assert response.status_code == 206
    expected = data[start : (end + 1 if end is not None else None)]
    assert body(response) == expected
    assert response["Content-Length"] == str(len(expected))
    first = start if start >= 0 else len(data) + start
    assert response["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"


def test_unsatisfiable_range_gets_416(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, data = stored
    response = staff_client.get(f"/api/images/{result.pk}", HTTP_RANGE=f"bytes={len(data) + 10}-")
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(data)}"


def test_download_has_a_safe_file_name(
    staff_client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    response = staff_client.get(f"/api/images/{result.pk}?download=1")
    disposition = response["Content-Disposition"]
    assert disposition == f'attachment; filename="genvault-{result.pk}-a-fox-in-snow-rm-rf.jpg"'


def test_thumbnail_is_served(staff_client: Client, stored: tuple[GenerationResult, bytes]) -> None:
    result, _ = stored
    response = staff_client.get(f"/api/images/{result.pk}/thumbnail")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"


def test_not_stored_redirects_to_the_external_url_until_it_expires(staff_client: Client) -> None:
    result = GenerationResultFactory(external_url_expires_at=timezone.now() + timedelta(hours=1))
    response = staff_client.get(f"/api/images/{result.pk}")
    assert response.status_code == 302
    assert response["Location"] == result.external_url

    GenerationResult.objects.filter(pk=result.pk).update(
        external_url_expires_at=timezone.now() - timedelta(minutes=1)
    )
    response = staff_client.get(f"/api/images/{result.pk}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_missing_object_and_unknown_ids_get_404(
    staff_client: Client, stored: tuple[GenerationResult, bytes], image_storage_root: Any
) -> None:
    result, _ = stored
    (image_storage_root / result.storage_key).unlink()
    assert staff_client.get(f"/api/images/{result.pk}").status_code == 404
    assert staff_client.get("/api/images/987654").status_code == 404
    failed = GenerationResultFactory(
        status=GenerationResult.Status.FAILED, external_url="", image_url=""
    )
    assert staff_client.get(f"/api/images/{failed.pk}").status_code == 404


def test_anonymous_cannot_read_images(
    client: Client, stored: tuple[GenerationResult, bytes]
) -> None:
    result, _ = stored
    response = client.get(f"/api/images/{result.pk}")
    assert response.status_code == 401
    assert b"\xff\xd8" not in response.content
