"""ZIPs of results, streamed: what is in them, what they cost, and what a filter picks.

Each archive is downloaded the way a client gets it (`POST /api/downloads`, a token) and
opened with zipfile: the bytes, the names, metadata.json and the announced length.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import datetime
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generations.models import GenerationResult
from generations.services.downloads import (
    METADATA_NAME,
    TooManyToDownload,
    results_archive,
    results_for_download,
)
from generations.services.organize import results_add_tags
from storage_backends import images as image_storage
from tests.factories import (
    GenerationFactory,
    GenerationResultFactory,
    ImageModelFactory,
    jpeg_bytes,
    mark_stored,
)

pytestmark = pytest.mark.django_db

S = GenerationResult.StorageStatus


def stored_result(
    *, prompt: str = "a red fox in snow", width: int = 64, height: int = 48, **fields: Any
) -> GenerationResult:
    result = GenerationResultFactory(generation=GenerationFactory(prompt_text=prompt), **fields)
    return mark_stored(result, data=jpeg_bytes(width, height, color=(result.pk % 250, 90, 30)))


def download(client: Client, body: dict[str, Any]) -> tuple[Any, bytes]:
    response = client.post("/api/downloads", data=json.dumps(body), content_type="application/json")
    body_bytes = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body_bytes


def stored_bytes(result: GenerationResult) -> bytes:
    with image_storage.open_object(backend=result.storage_backend, key=result.storage_key) as fh:
        return fh.read()


def metadata_of(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return json.loads(archive.read(METADATA_NAME))


def matched_ids(data: bytes) -> set[int]:
    """Every result the download took: those in it and those listed as skipped."""
    metadata = metadata_of(data)
    return {entry["id"] for entry in metadata["images"] + metadata["skipped"]}


def test_a_zip_of_five_holds_their_bytes_and_metadata_and_its_announced_length(
    token_client: Client,
) -> None:
    model = ImageModelFactory(name="Seedream 4.0 (demo)")
    five = [
        stored_result(prompt=f"a lighthouse at dusk, study {n}", model=model, width=64 + n)
        for n in range(5)
    ]
    GenerationResult.objects.filter(pk=five[0].pk).update(
        favorite=True, params_used={"seed": 1234, "size": "1024x1024"}
    )
    results_add_tags(result_ids=[five[0].pk, five[1].pk], names=["Harbour", "dusk"])
    pending = GenerationResultFactory(generation=GenerationFactory(prompt_text="a pending fox"))

    response, data = download(token_client, {"resultIds": [r.pk for r in five] + [pending.pk]})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="genvault-')
    assert int(response["Content-Length"]) == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        infos = {info.filename: info for info in archive.infolist()}
        metadata = json.loads(archive.read(METADATA_NAME))
        by_id = {entry["id"]: entry for entry in metadata["images"]}
        assert set(by_id) == {r.pk for r in five}
        for result in five:
            result.refresh_from_db()
            entry = by_id[result.pk]
            name = entry["file"]
            study = five.index(result)
            assert name == f"genvault-{result.pk}-a-lighthouse-at-dusk-study-{study}.jpg"
            assert infos[name].compress_type == zipfile.ZIP_STORED
            assert archive.read(name) == stored_bytes(result)
            assert entry["sha256"] == hashlib.sha256(archive.read(name)).hexdigest()
            assert entry["prompt"] == result.generation.prompt_text
            assert entry["model"] == result.upstream_model_id
            assert entry["modelName"] == "Seedream 4.0 (demo)"
            assert entry["size"] == f"{result.width}x{result.height}"
            assert entry["createdAt"] == result.created_at.isoformat()
        assert set(infos) == {by_id[r.pk]["file"] for r in five} | {METADATA_NAME}
    first = by_id[five[0].pk]
    assert (first["seed"], first["favorite"], first["tags"]) == (1234, True, ["dusk", "Harbour"])
    assert (by_id[five[1].pk]["seed"], by_id[five[1].pk]["favorite"]) == (None, False)
    assert by_id[five[2].pk]["tags"] == []
    # The one not stored is not in the ZIP, and metadata says why.
    assert [(e["id"], e["reason"]) for e in metadata["skipped"]] == [
        (pending.pk, "not stored yet (pending): download it again once it is stored")
    ]


def test_queries_do_not_grow_with_the_number_of_images() -> None:
    def queries_for(count: int) -> int:
        results = [stored_result(prompt=f"take {count}-{n}") for n in range(count)]
        results_add_tags(result_ids=[r.pk for r in results], names=["sky", "sea"])
        ids = [r.pk for r in results]
        with CaptureQueriesContext(connection) as queries:
            rows = results_for_download(GenerationResult.objects.filter(pk__in=ids))
            archive = results_archive(results=rows)
            data = b"".join(archive.chunks)
        assert len(data) == archive.size
        assert archive.included == count
        return len(queries)

    assert queries_for(2) == queries_for(9) == 2


def test_more_than_the_limit_is_refused_before_anything_streams(token_client: Client) -> None:
    results = [stored_result(prompt=f"take {n}") for n in range(4)]
    with pytest.raises(TooManyToDownload, match="more than 3 results match"):
        results_for_download(GenerationResult.objects.all(), limit=3)
    ids = [r.pk for r in results]
    response, _ = download(token_client, {"resultIds": ids * 200})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many"


def test_a_filter_download_honours_every_filter(token_client: Client) -> None:
    one, other = ImageModelFactory(), ImageModelFactory()
    day = timezone.make_aware(datetime(2026, 3, 10, 12, 0))

    def make(
        *,
        prompt: str = "a red fox in snow",
        created: datetime = day,
        model: Any = one,
        stored: bool = True,
        status: str = GenerationResult.Status.SUCCESS,
        favorite: bool = True,
        tag: str = "winter",
        width: int = 64,
        height: int = 36,
        seed: int = 42,
        reference: str = "https://images.example.test/reference.png",
    ) -> GenerationResult:
        generation = GenerationFactory(prompt_text=prompt, reference_image_url=reference)
        result = GenerationResultFactory(
            generation=generation,
            model=model,
            status=status,
            favorite=favorite,
            params_used={"seed": seed},
            created_at=created,
        )
        if stored:
            mark_stored(result, data=jpeg_bytes(width, height))
        results_add_tags(result_ids=[result.pk], names=[tag])
        return result

    target = make()
    # Each differs from the target in one thing; the filters each one fails.
    decoys = {
        frozenset({"q"}): make(prompt="a grey heron at dawn"),
        frozenset({"since"}): make(created=timezone.make_aware(datetime(2026, 3, 1, 12))),
        frozenset({"until"}): make(created=timezone.make_aware(datetime(2026, 3, 20, 12))),
        frozenset({"model"}): make(model=other),
        frozenset({"storage", "size", "aspect"}): make(stored=False),
        frozenset({"status"}): make(status=GenerationResult.Status.FAILED),
        frozenset({"favorite"}): make(favorite=False),
        frozenset({"tag"}): make(tag="summer"),
        frozenset({"size"}): make(width=128, height=72),
        frozenset({"size", "aspect"}): make(width=64, height=48),
        frozenset({"seed"}): make(seed=7),
        frozenset({"reference"}): make(reference=""),
    }
    filters: dict[str, Any] = {
        "q": "RED FOX",
        "since": "2026-03-05",
        "until": "2026-03-15",
        "model": one.pk,
        "storage": "stored",
        "status": "SUCCESS",
        "favorite": True,
        "tag": "Winter",
        "size": "64x36",
        "aspect": "16:9",
        "seed": 42,
        "reference": "with",
    }
    everyone = {target.pk} | {d.pk for d in decoys.values()}

    response, data = download(token_client, {"filter": filters})
    assert response.status_code == 200, data[:300]
    assert matched_ids(data) == {target.pk}
    for name, value in filters.items():
        response, data = download(token_client, {"filter": {name: value}})
        assert response.status_code == 200, (name, data[:300])
        failing = {d.pk for fails, d in decoys.items() if name in fails}
        assert matched_ids(data) == everyone - failing, name


def test_a_filter_typed_wrong_is_a_400_naming_it(token_client: Client) -> None:
    response, _ = download(token_client, {"filter": {"aspect": "wide"}})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "filter.aspect"
    response, _ = download(token_client, {"filter": {"colour": "red"}})
    assert response.json()["error"]["field"] == "filter.colour"
    response, _ = download(token_client, {"resultIds": [1], "filter": {}})
    assert response.status_code == 400
