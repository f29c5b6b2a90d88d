"""Small steps the fault tests share: calling the API, waiting for rows to settle."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import requests
from django.test import Client
from django.utils import timezone

from generations.models import GenerationResult
from tests.conftest import wait_for

S = GenerationResult.StorageStatus
SETTLED = (S.STORED, S.FAILED, S.EXPIRED)
SEEDREAM_4 = "doubao-seedream-4-0-250828"
# The smallest of Seedream 4.0's recommended sizes (1K at 16:9): Ark refuses fewer pixels.
SIZE = "1280x720"


def generate_body(prompt: str, **extra: Any) -> dict[str, Any]:
    """The `/api/generate` request the fault tests send: Seedream 4.0 at 1280x720."""
    return {"prompt": prompt, "modelIds": [SEEDREAM_4], "size": SIZE, **extra}


def post_generate(client: Client, prompt: str, **extra: Any) -> dict[str, Any]:
    body = generate_body(prompt, **extra)
    response = client.post("/api/generate", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def timed_generate(
    session: requests.Session, base_url: str, prompt: str, *, timeout: float, **extra: Any
) -> tuple[requests.Response, float]:
    """`/api/generate` over HTTP on a served site: the response and the seconds it took."""
    started = time.monotonic()
    response = session.post(
        f"{base_url}/api/generate", json=generate_body(prompt, **extra), timeout=timeout
    )
    return response, time.monotonic() - started


def storage_status(result_id: int) -> str:
    return GenerationResult.objects.values_list("storage_status", flat=True).get(pk=result_id)


def wait_for_status(result_id: int, wanted: tuple[str, ...], *, timeout: float = 30) -> str:
    def reached() -> str | None:
        status = storage_status(result_id)
        return status if status in wanted else None

    reached.__name__ = f"result {result_id} to reach {'/'.join(wanted)}"
    return wait_for(reached, timeout=timeout)


def wait_for_thumbnail(result_id: int, *, timeout: float = 30) -> None:
    """Stored, and given its thumbnail by the derivatives stage that follows storing."""

    def made() -> bool:
        return not GenerationResult.objects.awaiting_derivatives().filter(pk=result_id).exists()

    made.__name__ = f"result {result_id} to get its thumbnail"
    wait_for_status(result_id, (S.STORED,), timeout=timeout)
    wait_for(made, timeout=timeout)


def wait_all_settled(result_ids: list[int], *, timeout: float = 60) -> None:
    """Every result stored with its thumbnail, or failed, or expired."""

    def settled() -> bool:
        rows = GenerationResult.objects.filter(pk__in=result_ids).values_list(
            "storage_status", "thumbnail_key"
        )
        return all(s in SETTLED and (s != S.STORED or thumb) for s, thumb in rows)

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
