"""Fault 2: the broker stopped while `/api/generate` is called.

gunicorn serves the API with the production Redis settings; with the broker down a
request still answers 200 in normal time, its results `pending` with their external
URLs. Once the broker is back, the sweep queues them and a worker stores them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import CommandError, call_command
from django.urls import reverse

from generations.models import GenerationResult
from generations.tasks import sweep_unstored_images
from tests.faults.helpers import S, age_rows, post_generate, timed_generate, wait_all_settled
from tests.faults.invariants import assert_no_image_lost, local_objects, upstream_bytes

pytestmark = [
    pytest.mark.faults,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    # The broker is stopped and started: our own Redis, since the machine's RabbitMQ is
    # shared and never stopped by a test.
    pytest.mark.parametrize("broker", ["redis"], indirect=True),
]

NORMAL_SECONDS = 5


def test_generate_answers_while_the_broker_is_down_and_the_sweep_stores_later(
    start_gunicorn: Any,
    start_worker: Any,
    broker: Any,
    demo: Any,
    api_token: str,
    image_storage_root: Path,
) -> None:
    web = start_gunicorn(workers=1)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_token}"
    assert session.get(f"{web.url}/healthz", timeout=10).status_code == 200
    broker.stop()

    result_ids = []
    # The last request asks for 3 images at once: one refused publish must not make
    # the others wait a connect timeout each.
    for n, extra in enumerate([{}, {}, {"params": {"max_images": 3}}]):
        response, elapsed = timed_generate(
            session, web.url, f"a fox while the broker is down, take {n}", timeout=30, **extra
        )
        assert response.status_code == 200, response.text
        assert elapsed < NORMAL_SECONDS, f"generate took {elapsed:.1f}s with the broker down"
        for result in response.json()["results"]:
            assert result["status"] == "SUCCESS"
            assert result["storageStatus"] == S.PENDING
            assert result["imageUrl"] == result["externalImageUrl"]
            assert result["externalImageUrl"].startswith(demo.base_url)
            result_ids.append(result["id"])
    assert len(result_ids) >= 3

    health = session.get(f"{web.url}/healthz", timeout=10)
    assert health.status_code == 503
    assert health.json()["broker"] == "unavailable"

    broker.start()
    start_worker()
    time.sleep(1)
    statuses = GenerationResult.objects.filter(pk__in=result_ids).values_list(
        "storage_status", flat=True
    )
    assert set(statuses) == {S.PENDING}, "nothing was queued, so nothing may have moved"
    age_rows(result_ids)
    assert sweep_unstored_images() == len(result_ids)
    wait_all_settled(result_ids, timeout=30)

    counts = assert_no_image_lost(
        objects=local_objects(image_storage_root),
        upstream=lambda r: upstream_bytes(demo, r.external_url),
    )
    assert counts == {S.STORED: len(result_ids)}
    assert session.get(f"{web.url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("restore_with", ["gallery restore-everything", "restore_images"])
def test_failed_results_restored_while_the_broker_is_down_are_stored_by_the_sweep_later(
    restore_with: str,
    start_worker: Any,
    broker: Any,
    demo: Any,
    staff_client: Any,
    token_client: Any,
    image_storage_root: Path,
) -> None:
    body = post_generate(token_client, "a fox that failed to store", params={"max_images": 2})
    result_ids = [r["id"] for r in body["results"]]
    # Their first attempts failed (the image host was unreachable, say) and gave up.
    GenerationResult.objects.filter(pk__in=result_ids).update(
        storage_status=S.FAILED, storage_error="fetch_failed: the image host did not answer"
    )
    broker.stop()

    if restore_with == "restore_images":
        with pytest.raises(CommandError, match="wait as pending for the sweep"):
            call_command("restore_images", verbosity=0)
    else:
        response = staff_client.post(reverse("gallery:restore_all"), follow=True)
        assert "stored once it is back" in response.content.decode()
    statuses = GenerationResult.objects.filter(pk__in=result_ids).values_list(
        "storage_status", flat=True
    )
    assert set(statuses) == {S.PENDING}, "a re-stored result waits where the sweep looks"

    broker.start()
    start_worker()
    age_rows(result_ids)
    assert sweep_unstored_images() == len(result_ids)
    wait_all_settled(result_ids, timeout=30)
    counts = assert_no_image_lost(
        objects=local_objects(image_storage_root),
        upstream=lambda r: upstream_bytes(demo, r.external_url),
    )
    assert counts == {S.STORED: len(result_ids)}
