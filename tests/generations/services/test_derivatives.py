"""The derivatives stage: a stored image decoded whole and given its thumbnail, or, when
its decode fails, unstored and left for the sweep to store again.

The images are served over loopback by a host of the test's own and stored by the
safe stage first, as a worker stores them.
"""

from __future__ import annotations

import struct
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from PIL import Image

from generations.models import GenerationResult
from generations.services.derivatives import DerivativesOutcome, result_make_derivatives
from generations.services.storing import (
    StoreOutcome,
    result_store_image,
    results_due_for_derivatives,
    results_due_for_storing,
)
from tests.factories import GenerationResultFactory, mark_stored
from tests.generations.sample_images import JPEG, PNG
from tests.image_host import ImageHost

pytestmark = pytest.mark.django_db

S = GenerationResult.StorageStatus


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def png_with_garbled_pixels(data: bytes) -> bytes:
    """Every chunk whole and CRC-checked, but the pixels do not inflate: a PNG that passes
    the safe stage's checks and fails only when decoded."""
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    body = bytearray(data[idat + 4 : idat + 4 + length])
    body[2 : 2 + 64] = b"\xff" * 64
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)))
    return data[: idat + 4] + bytes(body) + crc + data[idat + 8 + length :]


def stored(image_host: ImageHost, name: str, data: bytes) -> GenerationResult:
    result = image_host.result_for(name, data)
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED
    result.refresh_from_db()
    return result


def test_a_stored_image_gets_its_thumbnail(image_host: ImageHost, image_storage_root: Path) -> None:
    result = stored(image_host, "fox.jpg", JPEG)
    assert not result.has_thumbnail

    assert result_make_derivatives(result_id=result.pk) is DerivativesOutcome.MADE

    result.refresh_from_db()
    assert result.has_thumbnail
    assert result.thumbnail_key == f"thumbnails/{result.pk}.webp"
    with Image.open(image_storage_root / result.thumbnail_key) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (512, 288))
    assert stored_files(image_storage_root) == sorted([result.storage_key, result.thumbnail_key])
    # Queued twice (the sweep and the first task): the second finds it made.
    assert result_make_derivatives(result_id=result.pk) is DerivativesOutcome.SKIPPED


def test_a_stored_image_that_does_not_decode_goes_back_to_pending_without_its_object(
    image_host: ImageHost, image_storage_root: Path
) -> None:
    result = stored(image_host, "garbled.png", png_with_garbled_pixels(PNG))
    assert stored_files(image_storage_root) == [result.storage_key]

    assert result_make_derivatives(result_id=result.pk) is DerivativesOutcome.UNSTORED

    result.refresh_from_db()
    assert result.storage_status == S.PENDING
    assert result.storage_error.startswith("not_an_image"), result.storage_error
    assert "decoding the stored image" in result.storage_error
    assert result.image_url == result.external_url  # the external URL lives on
    assert (result.storage_key, result.thumbnail_key, result.sha256) == ("", "", "")
    assert stored_files(image_storage_root) == []
    # The sweep stores it again while its URL lives.
    GenerationResult.objects.filter(pk=result.pk).update(
        created_at=timezone.now() - timedelta(minutes=5)
    )
    assert result.pk in results_due_for_storing()


def test_a_stored_image_whose_object_is_gone_goes_back_to_pending(
    image_host: ImageHost, image_storage_root: Path
) -> None:
    result = stored(image_host, "fox.jpg", JPEG)
    (image_storage_root / result.storage_key).unlink()

    assert result_make_derivatives(result_id=result.pk) is DerivativesOutcome.UNSTORED

    result.refresh_from_db()
    assert result.storage_status == S.PENDING
    assert result.storage_error.startswith("object_missing")
    assert result.image_url == result.external_url


def test_only_stored_images_without_a_thumbnail_are_made(image_storage_root: Path) -> None:
    pending = GenerationResultFactory()
    with_thumbnail = mark_stored(GenerationResultFactory())

    assert result_make_derivatives(result_id=pending.pk) is DerivativesOutcome.SKIPPED
    assert result_make_derivatives(result_id=with_thumbnail.pk) is DerivativesOutcome.SKIPPED
    assert result_make_derivatives(result_id=10**9) is DerivativesOutcome.SKIPPED


def test_the_sweep_takes_stored_images_still_without_a_thumbnail_after_a_grace(
    settings: Any,
) -> None:
    grace = max(settings.STORAGE_LEASE_SECONDS, settings.CELERY_TASK_TIME_LIMIT)
    forgotten = mark_stored(GenerationResultFactory(), thumbnail=False)
    just_stored = mark_stored(GenerationResultFactory(), thumbnail=False)
    with_thumbnail = mark_stored(GenerationResultFactory())
    long_ago = timezone.now() - timedelta(seconds=grace + 60)
    GenerationResult.objects.filter(pk__in=[forgotten.pk, with_thumbnail.pk]).update(
        stored_at=long_ago
    )

    assert results_due_for_derivatives() == [forgotten.pk]
    assert just_stored.pk not in results_due_for_derivatives()  # its own task is on its way
