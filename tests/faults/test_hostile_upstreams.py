"""Fault 6: every kind of hostile image host at once, mixed with good ones.

One real worker takes them all: the good ones are stored byte for byte, the bad ones
refused with the reason recorded, and the same worker process is alive throughout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from generations.models import GenerationResult
from tests.faults.helpers import S, post_generate, wait_all_settled
from tests.faults.invariants import assert_no_image_lost, local_objects, upstream_bytes

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

MAX_BYTES = 2 * 1024 * 1024

GOOD = [
    "[demo:png]",
    "[demo:webp]",
    "[demo:wrong_type]",  # PNG bytes declared JPEG: stored as the PNG it is
    "[demo:text_type]",  # JPEG bytes declared text/plain
    "[demo:flaky_image=1]",  # one 503, then the retry stores it
    "[demo:slow_image=1]",
    "[demo:redirect=2]",  # within the 3 redirects allowed
    "[demo:big=1]",  # a 1 MiB JPEG under a 2 MiB limit
    "",
]
HOSTILE = {
    "[demo:expired]": (S.EXPIRED, "image_expired"),
    "[demo:truncated]": (S.FAILED, "connection_failed"),
    "[demo:oversized=3]": (S.FAILED, "image_too_large"),
    "[demo:oversized_chunked=3]": (S.FAILED, "image_too_large"),
    "[demo:big=3]": (S.FAILED, "image_too_large"),
    "[demo:html]": (S.FAILED, "not_an_image"),
    "[demo:svg]": (S.FAILED, "not_an_image"),
    "[demo:bomb]": (S.FAILED, "image_too_many_pixels"),
    "[demo:redirect_loopback]": (S.FAILED, "address_refused"),
    "[demo:redirect=4]": (S.FAILED, "too_many_redirects"),
}
# Plain http from a host that is not allowed: refused as the upstream answers it, so
# the result fails with no URL and there is nothing to store.
REFUSED_AS_ANSWERED = [
    "[demo:host=127.0.0.2]",
    "[demo:host=[::1]]",
    "[demo:host=2130706433]",
    "[demo:host=[::ffff:127.0.0.1]]",
    "[demo:host=localhost]",
]


def test_hostile_and_good_upstreams_under_one_worker(
    start_worker: Any, demo: Any, token_client: Client, image_storage_root: Path
) -> None:
    worker = start_worker(
        concurrency=2, IMAGE_FETCH_MAX_BYTES=str(MAX_BYTES), STORAGE_MAX_ATTEMPTS="2"
    )
    pids_before = worker_pids(worker)

    expected: dict[int, tuple[str, str]] = {}
    good_ids = []
    prompts = [(m, None) for m in GOOD] + list(HOSTILE.items())
    # Interleaved, so that bad and good ones are in flight together.
    prompts.sort(key=lambda item: hash(item[0]) % 7)
    for marker in REFUSED_AS_ANSWERED:
        (result,) = post_generate(token_client, f"a trap {marker}")["results"]
        assert (result["status"], result["error"]["code"]) == ("FAILED", "UnsafeImageUrl")
        assert result["externalImageUrl"] is None
    for n, (marker, outcome) in enumerate(prompts):
        (result,) = post_generate(token_client, f"image {n} {marker}")["results"]
        if outcome is None:
            good_ids.append(result["id"])
        else:
            expected[result["id"]] = outcome

    wait_all_settled([*good_ids, *expected], timeout=90)

    for result_id in good_ids:
        row = GenerationResult.objects.get(pk=result_id)
        assert row.storage_status == S.STORED, (row.external_url, row.storage_error)
    for result_id, (status, code) in expected.items():
        row = GenerationResult.objects.get(pk=result_id)
        assert (row.storage_status, row.storage_error.split(":")[0]) == (status, code), (
            row.external_url,
            row.storage_error,
        )
    assert GenerationResult.objects.get(pk=good_ids[0]).storage_status == S.STORED

    # No connection ever reached a refused spelling of loopback.
    netloc = demo.base_url.split("://", 1)[1]
    assert {e["host"] for e in demo.request_log} == {netloc}

    assert worker.process.poll() is None
    assert worker_pids(worker) == pids_before, "a pool process died and was replaced"
    log = worker.log_path.read_text()
    assert "WorkerLostError" not in log and "Traceback" not in log, log[-3000:]

    counts = assert_no_image_lost(
        objects=local_objects(image_storage_root),
        upstream=lambda r: upstream_bytes(demo, r.external_url),
    )
    assert counts[S.STORED] == len(GOOD)


def worker_pids(worker: Any) -> set[int]:
    """The worker's main process and its pool children."""
    children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children")
    return {worker.process.pid, *map(int, children.read_text().split())}
