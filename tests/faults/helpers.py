"""Small steps the fault tests share: calling the API, waiting for rows to settle."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.test import Client
from django.utils import timezone

from generations.models import GenerationResult
from tests.conftest import wait_for

S = GenerationResult.StorageStatus
SETTLED = (S.STORED, S.FAILED, S.EXPIRED)


def post_generate(client: Client, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {"prompt": prompt, "modelIds": ["doubao-seedream-4-0-250828"], "size": "256x256"}
    body.update(extra)
    response = client.post("/api/generate", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def storage_status(result_id: int) -> str:
    return GenerationResult.objects.values_list("storage_status", flat=True).get(pk=result_id)


def wait_for_status(result_id: int, wanted: tuple[str, ...], *, timeout: float = 30) -> str:
    def reached() -> str | None:
        status = storage_status(result_id)
        return status if status in wanted else None

    reached.__name__ = f"result {result_id} to reach {'/'.join(wanted)}"
    return wait_for(reached, timeout=timeout)


def wait_all_settled(result_ids: list[int], *, timeout: float = 60) -> None:
    def settled() -> bool:
        statuses = GenerationResult.objects.filter(pk__in=result_ids).values_list(
            "storage_status", flat=True
        )
        return all(s in SETTLED for s in statuses)

    settled.__name__ = f"{len(result_ids)} results to settle"
    wait_for(settled, timeout=timeout, interval=0.3)


def age_rows(result_ids: list[int], *, minutes: int = 5) -> None:
    """Let the clock run on: the sweep leaves rows of the last minute to their own task."""
    GenerationResult.objects.filter(pk__in=result_ids).update(
        created_at=timezone.now() - timedelta(minutes=minutes)
    )


def image_fetches(demo: Any) -> list[dict[str, Any]]:
    return [
        e for e in demo.request_log if e["method"] == "GET" and e["path"].startswith("/images/")
    ]
