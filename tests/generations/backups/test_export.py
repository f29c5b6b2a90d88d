"""Exporting a backup: its JSON over HTTP and in a file, and the ZIP that streams with it."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from generations.backups.export import export_data
from generations.models import Generation, GenerationResult, ImageModel, Prompt
from storage_backends import images as image_storage
from tests.factories import GenerationResultFactory
from tests.generations.backups.bundles import SEEDREAM_4, S, command, comparable, populate, wipe

pytestmark = pytest.mark.django_db


def test_api_export_json_shape(token_client: Client, client: Client) -> None:
    populate(results=12)

    assert client.get("/api/export").status_code == 401
    response = token_client.get("/api/export")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "version",
        "exportedAt",
        "prompts",
        "models",
        "generations",
        "tags",
        "shares",
    }
    assert body["version"] == 1
    generation = next(g for g in body["generations"] if g["createdBy"] and g["promptId"])
    assert {
        "id",
        "promptId",
        "prompt",
        "size",
        "params",
        "referenceImageUrl",
        "referenceResultId",
    } <= set(generation)
    assert generation["createdBy"] == "alice"
    result = next(
        r for g in body["generations"] for r in g["results"] if r["storageStatus"] == "stored"
    )
    for name in (
        "id",
        "modelId",
        "model",
        "status",
        "errorCode",
        "errorMessage",
        "imageUrl",
        "externalImageUrl",
        "externalImageUrlExpiresAt",
        "paramsUsed",
        "paramsOverride",
        "storageStatus",
        "storageKey",
        "thumbnailKey",
        "contentType",
        "byteSize",
        "sha256",
        "width",
        "height",
        "storedAt",
    ):
        assert name in result
    assert result["imageUrl"] == f"/api/images/{result['id']}"
    assert sum(len(g["results"]) for g in body["generations"]) == 12
    assert {m["upstreamModelId"] for m in body["models"]} >= {SEEDREAM_4, "demo-house-style"}


def test_api_export_with_images_streams_a_readable_zip(token_client: Client) -> None:
    images = populate(results=12)

    response = token_client.get("/api/export?images=1")

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/zip"
    assert "attachment" in response["Content-Disposition"]
    payload = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
        assert {"export.json", "manifest.json"} <= names
        manifest = json.loads(archive.read("manifest.json"))["images"]
        export = json.loads(archive.read("export.json"))
        for result_id, data in images.items():
            key = f"generations/{result_id}.jpg"
            assert archive.read(f"images/{key}") == data
            assert manifest[key] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            assert f"images/thumbnails/{result_id}.webp" in names
    assert comparable(export) == comparable(export_data())


@pytest.mark.parametrize("images", [True, False], ids=["zip", "json"])
def test_a_link_import_would_refuse_is_left_out_of_the_backup_not_the_row(
    settings: Any, tmp_path: Path, images: bool
) -> None:
    """A row written before URLs were checked must not make our own backup unrestorable."""
    populate(results=6)
    hostile = "javascript:alert(document.domain)"
    victim = GenerationResult.objects.filter(storage_status=S.PENDING).first()
    assert victim is not None
    GenerationResult.objects.filter(pk=victim.pk).update(
        external_url=hostile, image_url=hostile, params_used={"externalImageUrl": hostile}
    )
    Generation.objects.filter(pk=victim.generation_id).update(reference_image_url=hostile)
    count = GenerationResult.objects.count()
    bundle = tmp_path / ("backup.zip" if images else "backup.json")

    err = io.StringIO()
    call_command(
        "export_backup",
        str(bundle),
        *(["--images"] if images else []),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert f"left out: result {victim.pk}: an image URL that is not https" in err.getvalue()
    if images:
        wipe(settings, tmp_path)
    else:
        GenerationResult.objects.all().delete()
        Generation.objects.all().delete()
        Prompt.objects.all().delete()
        ImageModel.objects.exclude(upstream_model_id__startswith="doubao-").delete()

    command("import_backup", str(bundle))

    assert GenerationResult.objects.count() == count
    row = GenerationResult.objects.get(pk=victim.pk)
    assert (row.external_url, row.image_url, row.params_used) == ("", "", {})
    assert Generation.objects.get(pk=victim.generation_id).reference_image_url == ""


def test_an_image_gone_from_storage_is_exported_as_not_stored_and_the_bundle_imports(
    settings: Any, tmp_path: Path
) -> None:
    """The bundle stays one import accepts: every row it calls stored has its bytes in it."""
    images = populate(results=12)
    lost_id, kept_id = sorted(images)[:2]
    image_storage.delete_objects(backend="local", keys=[f"generations/{lost_id}.jpg"])
    bundle = tmp_path / "backup.zip"

    err = io.StringIO()
    call_command("export_backup", str(bundle), "--images", stdout=io.StringIO(), stderr=err)

    assert f"left out: result {lost_id}: local:generations/{lost_id}.jpg is missing" in (
        err.getvalue()
    )
    with zipfile.ZipFile(bundle) as archive:
        export = json.loads(archive.read("export.json"))
        assert f"images/thumbnails/{lost_id}.webp" not in archive.namelist()
    exported = {r["id"]: r for g in export["generations"] for r in g["results"]}
    lost = exported[lost_id]
    assert lost["storageStatus"] == S.PENDING
    assert lost["storageKey"] == lost["thumbnailKey"] == lost["sha256"] == ""
    assert lost["byteSize"] is None and lost["storedAt"] is None
    assert lost["imageUrl"] == lost["externalImageUrl"] != ""
    assert lost["storageError"] == "not in the backup: the object is missing"

    root = wipe(settings, tmp_path)
    command("import_backup", str(bundle))

    row = GenerationResult.objects.get(pk=lost_id)
    assert (row.storage_status, row.storage_key, row.image_url) == (
        S.PENDING,
        "",
        row.external_url,
    )
    assert GenerationResult.objects.get(pk=kept_id).storage_status == S.STORED
    assert not (root / f"generations/{lost_id}.jpg").exists()
    assert (root / f"generations/{kept_id}.jpg").read_bytes() == images[kept_id]


def test_params_used_in_the_export_shows_the_external_url_and_storage_error_of_the_columns(
    token_client: Client,
) -> None:
    """The row keeps no copy of either; readers of older bundles still find both keys."""
    result = GenerationResultFactory(
        params_used={"seed": 7, "watermark": False},
        external_url="https://images.example.test/fox.jpeg",
        storage_status=S.FAILED,
        storage_error="the image host answered 503",
    )

    body = token_client.get("/api/export").json()

    (exported,) = [r for g in body["generations"] for r in g["results"]]
    assert exported["paramsUsed"] == {
        "seed": 7,
        "watermark": False,
        "externalImageUrl": "https://images.example.test/fox.jpeg",
        "storageError": "the image host answered 503",
    }
    assert exported["externalImageUrl"] == "https://images.example.test/fox.jpeg"
    assert exported["storageError"] == "the image host answered 503"
    result.refresh_from_db()
    assert result.params_used == {"seed": 7, "watermark": False}


def test_a_generation_made_while_the_export_runs_is_left_for_the_next_backup() -> None:
    """Someone generates between the export's read of the generations and of the results."""
    populate(results=6)
    made: list[GenerationResult] = []

    def generate_meanwhile(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not made and sql.startswith("SELECT") and 'FROM "generations_generationresult"' in sql:
            made.append(GenerationResultFactory())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(generate_meanwhile):
        data = export_data()

    assert made
    exported = [r["id"] for g in data["generations"] for r in g["results"]]
    assert len(exported) == 6 and made[0].pk not in exported
    assert made[0].pk in [r["id"] for g in export_data()["generations"] for r in g["results"]]
