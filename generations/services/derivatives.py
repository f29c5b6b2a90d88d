"""Derivatives: what a stored image gets once it is safe, on a queue of its own.

Storing keeps an image after checks that decode no pixel, so that it is safe within a
few milliseconds of CPU. This stage then decodes it whole, which proves every pixel is
there, and writes its thumbnail. An image whose full decode fails is not one we keep
after all: its objects are deleted and the row goes back to `pending` with the error
recorded and its external URL kept, so that the sweep stores it again while that URL
lives.
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path
from tempfile import NamedTemporaryFile

from django.conf import settings

from generations.imaging import ImageRefused, inspect_and_thumbnail
from generations.models import GenerationResult
from generations.services.maintenance import copy_object_to_file
from generations.services.storing import download_dir
from generations.signals import announce_results_changed
from storage_backends import images as image_storage
from storage_backends.images import StorageUnavailable

logger = logging.getLogger(__name__)
S = GenerationResult.StorageStatus


class DerivativesOutcome(enum.Enum):
    MADE = "made"
    UNSTORED = "unstored"  # the full decode failed: the row is pending again
    RETRY = "retry"  # storage was unavailable; the caller may try again later
    SKIPPED = "skipped"  # not stored, or its thumbnail is made already


def result_make_derivatives(*, result_id: int) -> DerivativesOutcome:
    """Decode one stored image whole and write its thumbnail; see the module's docstring."""
    result = GenerationResult.objects.awaiting_derivatives().filter(pk=result_id).first()
    if result is None:
        return DerivativesOutcome.SKIPPED
    with NamedTemporaryFile(dir=download_dir(), prefix="fetch-stored-", suffix=".part") as copy:
        path = Path(copy.name)
        try:
            _size, sha256 = copy_object_to_file(
                backend=result.storage_backend, key=result.storage_key, dest=path
            )
        except FileNotFoundError:
            return _unstore(result, "object_missing: the stored object is gone")
        except StorageUnavailable as exc:
            logger.warning("result %s: could not read its stored image: %s", result.pk, exc)
            return DerivativesOutcome.RETRY
        if sha256 != result.sha256:
            return _unstore(result, "object_corrupt: the stored object's SHA-256 is not its row's")
        try:
            _info, thumbnail = inspect_and_thumbnail(
                path, max_pixels=settings.IMAGE_FETCH_MAX_PIXELS
            )
        except ImageRefused as exc:
            return _unstore(result, f"{exc.code}: {exc}")
    return _record_thumbnail(result, thumbnail)


def _unstore(result: GenerationResult, error: str) -> DerivativesOutcome:
    """Back to `pending`, its objects deleted, if the row still holds the bytes we read."""
    thumbnail_key = image_storage.thumbnail_key(result_id=result.pk)
    # Conditional, so that a row deleted, migrated or re-stored meanwhile is left alone;
    # only the attempt that turned the row deletes its objects.
    unstored = GenerationResult.objects.filter(
        pk=result.pk,
        storage_status=S.STORED,
        storage_backend=result.storage_backend,
        storage_key=result.storage_key,
        sha256=result.sha256,
    ).mark_not_stored(status=S.PENDING, error=f"{error} (found decoding the stored image)")
    if not unstored:
        return DerivativesOutcome.SKIPPED
    announce_results_changed()
    logger.info("result %s: stored image refused when decoded whole: %s", result.pk, error)
    try:
        image_storage.delete_objects(
            backend=result.storage_backend, keys=[result.storage_key, thumbnail_key]
        )
    except StorageUnavailable as exc:
        # The row no longer points at them; storing again writes the same keys.
        logger.warning("result %s: could not delete its refused objects: %s", result.pk, exc)
    return DerivativesOutcome.UNSTORED


def _record_thumbnail(result: GenerationResult, thumbnail: bytes) -> DerivativesOutcome:
    backend = result.storage_backend
    key = image_storage.thumbnail_key(result_id=result.pk)
    try:
        image_storage.save_object_bytes(backend=backend, key=key, data=thumbnail)
    except StorageUnavailable as exc:
        logger.warning("result %s: could not write its thumbnail: %s", result.pk, exc)
        return DerivativesOutcome.RETRY
    recorded = (
        GenerationResult.objects.awaiting_derivatives()
        .filter(pk=result.pk, storage_backend=backend, storage_key=result.storage_key)
        .update(thumbnail_key=key)
    )
    if recorded:
        return DerivativesOutcome.MADE
    # Another run recorded the same thumbnail (leave it), or the row moved on: deleted,
    # migrated or unstored meanwhile, and the object we wrote belongs to no one.
    if not GenerationResult.objects.filter(
        pk=result.pk, storage_backend=backend, thumbnail_key=key
    ).exists():
        image_storage.delete_objects(backend=backend, keys=[key])
    return DerivativesOutcome.SKIPPED
