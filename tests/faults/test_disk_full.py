"""Fault: the local storage disk full while an image is stored.

`MEDIA_ROOT` is a small tmpfs the test mounts (root only, as CI runs; elsewhere the test
says so and skips). The write fails with "No space left on device": the attempt
records the error, leaves no part-file and no object, and keeps the external URL; once
space returns, the task's own retry stores the image.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from generations.models import GenerationResult
from tests.conftest import require_service, wait_for
from tests.faults.helpers import S, post_generate, wait_for_thumbnail
from tests.faults.invariants import assert_no_image_lost, local_objects, upstream_bytes
from tests.hosts.services import Tmpfs

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def every_file(root: Path) -> list[str]:
    """Every file under `root`, hidden part-files included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_full_storage_disk_fails_cleanly_and_storing_resumes_when_space_returns(
    start_worker: Any, demo: Any, token_client: Client, image_storage_root: Path
) -> None:
    require_service(
        os.geteuid() == 0 and shutil.which("mount") is not None,
        "mounting a small tmpfs as MEDIA_ROOT needs root",
    )
    disk = Tmpfs(image_storage_root, size="256k")  # a ~1.5 MiB photo cannot fit
    try:
        start_worker(STORAGE_MAX_ATTEMPTS="5")
        (result,) = post_generate(token_client, "a harbour at dusk [demo:photo=1.5]")["results"]
        result_id = result["id"]

        def refused_for_space() -> GenerationResult | None:
            row = GenerationResult.objects.get(pk=result_id)
            return row if "No space left on device" in row.storage_error else None

        row = wait_for(refused_for_space, timeout=30)
        assert row.storage_status == S.PENDING  # the task retries it
        assert row.storage_error.startswith("could not write"), row.storage_error
        assert row.image_url == row.external_url
        assert every_file(image_storage_root) == []  # no part-file, no object

        disk.resize("64m")
        wait_for_thumbnail(result_id, timeout=90)
        row.refresh_from_db()
        assert row.storage_attempts >= 2
        assert row.storage_error == ""
        assert_no_image_lost(
            objects=local_objects(image_storage_root),
            upstream=lambda r: upstream_bytes(demo, r.external_url),
        )
        assert every_file(image_storage_root) == sorted(local_objects(image_storage_root))
    finally:
        disk.close()
