"""The two checks every fault ends with: no image lost, and storage agrees with the rows.

1. Every result with an image is `stored` with the upstream's exact bytes, or keeps
   its external URL (in `image_url` and `params_used`) with the error recorded.
2. No object without a row, and no row pointing at a missing object: the storage
   folder or bucket is listed and compared with the rows, then `verify_images` runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.management import call_command

from generations.models import GenerationResult

S = GenerationResult.StorageStatus
DEMO_IMAGE_RE = re.compile(r"/images/([0-9a-f]{32})\.")


def upstream_bytes(demo: Any, url: str) -> bytes:
    """The bytes the demo upstream serves at `url`, read from its memory (no request)."""
    match = DEMO_IMAGE_RE.match(urlsplit(url).path)
    assert match, url
    image = demo.stored_image(match[1])
    assert image is not None, f"the demo upstream no longer holds {url}"
    return bytes(image.body)


def local_objects(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def s3_objects(client: Any, bucket: str) -> dict[str, bytes]:
    listing = client.list_objects_v2(Bucket=bucket)
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listing.get("Contents", [])
    }


def assert_no_image_lost(
    *,
    objects: dict[str, bytes],
    upstream: Callable[[GenerationResult], bytes | None],
    backend: str = "local",
    settled: bool = True,
) -> dict[str, int]:
    """Check both invariants against `objects` (key -> bytes); return counts by status.

    `upstream(result)` gives the bytes the upstream served for a result (None when
    unknown). With `settled`, no result may still be `pending` or `storing`, nor stored
    without its thumbnail.
    """
    referenced: set[str] = set()
    counts: dict[str, int] = {}
    for result in GenerationResult.objects.with_image().order_by("pk"):
        counts[result.storage_status] = counts.get(result.storage_status, 0) + 1
        assert result.external_url, f"result {result.pk} forgot its external URL"
        assert not set(result.params_used) & {"externalImageUrl", "storageError"}, result.pk
        if result.storage_status == S.STORED:
            assert result.storage_backend == backend, result.pk
            assert result.storage_key in objects, f"row {result.pk} points at a missing object"
            if settled or result.thumbnail_key:  # made just after storing
                assert result.thumbnail_key in objects, f"row {result.pk} lost its thumbnail"
            body = objects[result.storage_key]
            assert hashlib.sha256(body).hexdigest() == result.sha256, result.pk
            assert len(body) == result.byte_size, result.pk
            expected = upstream(result)
            if expected is not None:
                assert body == expected, f"result {result.pk}: stored bytes differ from upstream"
            assert result.image_url == result.stable_url, result.pk
            referenced.update({result.storage_key, result.thumbnail_key})
        else:
            assert result.image_url == result.external_url, (
                f"result {result.pk} ({result.storage_status}) lost its external URL"
            )
            if settled:
                assert result.storage_status in (S.FAILED, S.EXPIRED), (
                    f"result {result.pk} is still {result.storage_status}"
                )
                assert result.storage_error, f"result {result.pk} has no recorded error"
    orphans = sorted(set(objects) - referenced)
    assert not orphans, f"objects without a row: {orphans}"
    # The operator's check must agree: it exits non-zero on any problem.
    call_command("verify_images", verbosity=0)
    return counts
