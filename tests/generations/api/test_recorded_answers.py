"""Operations moved onto the router answer exactly as before: the status, the
Content-Type and the body's bytes, against answers recorded from the views they replace.

To record again on purpose (a shape changed for a reason): GENVAULT_RECORD_ANSWERS=1.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from generations.models import Generation, GenerationResult
from generations.services.organize import results_add_tags
from tests.factories import (
    GenerationFactory,
    GenerationResultFactory,
    ImageModelFactory,
    jpeg_bytes,
    mark_stored,
)

pytestmark = pytest.mark.django_db

RECORDED = Path(__file__).parent / "recorded"
MADE_AT = datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)


@pytest.fixture
def fixed_world() -> None:
    """Rows whose every answered value is fixed: ids, names, times, bytes."""
    model = ImageModelFactory(name="Recorded model", upstream_model_id="recorded-model-1")
    generation = GenerationFactory(pk=7001, prompt_text="a recorded fox", size="2K")
    stored = GenerationResultFactory(
        pk=7101,
        generation=generation,
        model=model,
        external_url="https://images.example.test/recorded.jpeg",
        params_used={"seed": 42, "size": "2K", "watermark": False},
    )
    mark_stored(stored, data=jpeg_bytes(), backend="local")
    GenerationResultFactory(
        pk=7102,
        generation=generation,
        model=model,
        status=GenerationResult.Status.FAILED,
        external_url="",
        image_url="",
        storage_status=GenerationResult.StorageStatus.NONE,
        error_code="OutputImageSensitiveContentDetected",
        error_message="the image was refused",
    )
    results_add_tags(result_ids=[7101], names=["Night Sky", "harbour"])
    results_add_tags(result_ids=[7102], names=["harbour"])
    Generation.objects.filter(pk=7001).update(
        created_at=MADE_AT, status=Generation.Status.DONE, usage_generated_images=1
    )
    GenerationResult.objects.filter(pk__in=[7101, 7102]).update(created_at=MADE_AT)


ANSWERS = {
    "generation": "/api/generations/7001",
    "generation_missing": "/api/generations/7999",
    "tags": "/api/tags",
    "tags_wrong_method": ("post", "/api/tags"),
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_the_answer_is_the_recorded_one(
    name: str, fixed_world: None, token_client: Client, settings: Any
) -> None:
    wanted = ANSWERS[name]
    method, path = wanted if isinstance(wanted, tuple) else ("get", wanted)
    response = getattr(token_client, method)(path)
    got = {
        "status": response.status_code,
        "contentType": response["Content-Type"],
        "allow": response.get("Allow"),
        "body": response.content.decode(),
    }
    recorded = RECORDED / f"{name}.json"
    if os.environ.get("GENVAULT_RECORD_ANSWERS") == "1":
        recorded.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n")
    assert got == json.loads(recorded.read_text())
