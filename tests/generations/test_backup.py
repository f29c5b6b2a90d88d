"""Backups for real: export to a file or over HTTP, wipe everything, import, compare.

Images are small real JPEGs written straight into the test's local storage, and
rows are bulk-created, so that a few hundred results round-trip quickly.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from generations.backup import export_data
from generations.models import Generation, GenerationResult, ImageModel, Prompt
from storage_backends import images as image_storage
from tests.factories import ImageModelFactory, jpeg_bytes

pytestmark = pytest.mark.django_db

S = GenerationResult.StorageStatus
SEEDREAM_4 = "doubao-seedream-4-0-250828"


def populate(*, results: int = 300) -> dict[int, bytes]:
    """Prompts, a model, generations and `results` results (most stored); bytes by result id."""
    user = get_user_model().objects.create_user(username="alice", is_staff=True)
    seeded = ImageModel.objects.get(upstream_model_id=SEEDREAM_4)
    custom = ImageModelFactory(name="House style", upstream_model_id="demo-house-style")
    prompts = [
        Prompt.objects.create(text=f"a lighthouse, study {i}", title=f"study {i}") for i in range(3)
    ]
    now = timezone.now()
    generations = Generation.objects.bulk_create(
        Generation(
            prompt=prompts[i % 3] if i % 2 else None,
            prompt_text=f"a red fox in snow, take {i}",
            size="1024x1024",
            params={"seed": i, "watermark": False},
            created_by=user if i % 3 else None,
            created_at=now - timezone.timedelta(minutes=i),
        )
        for i in range(results // 3)
    )
    rows = []
    for i in range(results):
        generation = generations[i % len(generations)]
        model = seeded if i % 4 else custom
        url = f"https://ark-demo.example.test/images/{i}.jpeg?X-Tos-Expires=86400"
        row = GenerationResult(
            generation=generation,
            model=model,
            upstream_model_id=model.upstream_model_id,
            image_index=i // len(generations),
            status=GenerationResult.Status.SUCCESS,
            external_url=url,
            image_url=url,
            external_url_expires_at=now + timezone.timedelta(hours=20),
            params_used={"seed": i, "externalImageUrl": url},
            params_override={"guidance_scale": 3} if i % 5 == 0 else {},
            storage_status=S.PENDING,
            created_at=now,
        )
        if i % 10 == 7:
            row.status = GenerationResult.Status.FAILED
            row.error_code = "OutputImageSensitiveContentDetected"
            row.error_message = "The output image may contain sensitive content."
            row.external_url = row.image_url = ""
            row.storage_status = ""
            row.params_used = {"seed": i}
        rows.append(row)
    GenerationResult.objects.bulk_create(rows)

    images: dict[int, bytes] = {}
    stored = []
    for i, row in enumerate(rows):
        if row.status != GenerationResult.Status.SUCCESS or i % 10 == 3:
            continue  # failed, or left pending
        data = jpeg_bytes(16, 16, color=(i % 256, (i * 7) % 256, 99))
        key = image_storage.image_key(result_id=row.pk, extension="jpg")
        thumb = image_storage.thumbnail_key(result_id=row.pk)
        image_storage.save_object_bytes(backend="local", key=key, data=data)
        image_storage.save_object_bytes(
            backend="local", key=thumb, data=b"RIFF\0\0\0\0WEBP" + bytes([i % 256])
        )
        row.storage_status = S.STORED
        row.storage_backend = "local"
        row.storage_key = key
        row.thumbnail_key = thumb
        row.content_type = "image/jpeg"
        row.byte_size = len(data)
        row.sha256 = hashlib.sha256(data).hexdigest()
        row.width = row.height = 16
        row.stored_at = now
        row.storage_attempts = 1
        row.image_url = row.stable_url
        stored.append(row)
        images[row.pk] = data
    GenerationResult.objects.bulk_update(
        stored,
        [
            "storage_status",
            "storage_backend",
            "storage_key",
            "thumbnail_key",
            "content_type",
            "byte_size",
            "sha256",
            "width",
            "height",
            "stored_at",
            "storage_attempts",
            "image_url",
        ],
        batch_size=500,
    )
    Generation.objects.filter(pk=generations[1].pk).update(reference_result=stored[0])
    return images


def wipe(settings: Any, tmp_path: Path) -> Path:
    """Delete every row the backup holds and start from an empty storage folder."""
    GenerationResult.objects.all().delete()
    Generation.objects.all().delete()
    Prompt.objects.all().delete()
    ImageModel.objects.exclude(upstream_model_id__startswith="doubao-").delete()
    root = tmp_path / "media-after"
    root.mkdir()
    storages = dict(settings.STORAGES)
    storages["images_local"] = {
        "BACKEND": "storage_backends.backends.local.LocalImageStorage",
        "OPTIONS": {"location": str(root)},
    }
    storages["images"] = storages["images_local"]
    settings.STORAGES = storages
    settings.MEDIA_ROOT = str(root)
    return root


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "exportedAt"}


def files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def rewrite_zip(source: Path, dest: Path, change: Any) -> None:
    """Copy a ZIP entry by entry; `change(name, data)` returns (name, data) or None to drop."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            changed = change(info.filename, src.read(info))
            if changed is not None:
                out.writestr(changed[0], changed[1])


def test_a_round_trip_through_a_zip_restores_every_row_and_every_byte(
    settings: Any, tmp_path: Path
) -> None:
    images = populate(results=300)
    before = comparable(export_data())
    bundle = tmp_path / "backup.zip"

    out = command("export_backup", str(bundle), "--images")
    assert f"{len(images)} images" in out

    root = wipe(settings, tmp_path)
    assert not Generation.objects.exists() and files(root) == []

    out = command("import_backup", str(bundle))

    assert f"results 300, images {len(images)}" in out
    after = comparable(export_data())
    assert after == before
    for result_id, data in images.items():
        assert (root / f"generations/{result_id}.jpg").read_bytes() == data
        assert (root / f"thumbnails/{result_id}.webp").exists()
    assert len(files(root)) == 2 * len(images)
    assert Generation.objects.filter(reference_result__isnull=False).count() == 1
    # New rows get fresh ids, after the imported ones.
    assert Prompt.objects.create(text="new").pk > max(p["id"] for p in before["prompts"])


def test_a_round_trip_through_json_keeps_stored_rows_whose_objects_are_still_there(
    tmp_path: Path,
) -> None:
    images = populate(results=30)
    before = comparable(export_data())
    bundle = tmp_path / "backup.json"
    command("export_backup", str(bundle))
    GenerationResult.objects.all().delete()
    Generation.objects.all().delete()
    Prompt.objects.all().delete()
    ImageModel.objects.exclude(upstream_model_id__startswith="doubao-").delete()
    lost_id = next(iter(images))
    image_storage.delete_objects(backend="local", keys=[f"generations/{lost_id}.jpg"])

    out = command("import_backup", str(bundle))

    assert "1 marked for re-store" in out
    after = comparable(export_data())
    lost = GenerationResult.objects.get(pk=lost_id)
    assert lost.storage_status == S.PENDING and lost.image_url == lost.external_url
    strip = {lost_id}
    assert [r for g in after["generations"] for r in g["results"] if r["id"] not in strip] == [
        r for g in before["generations"] for r in g["results"] if r["id"] not in strip
    ]


def test_a_tampered_bundle_is_refused_with_nothing_written(settings: Any, tmp_path: Path) -> None:
    images = populate(results=30)
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")
    victim = f"images/generations/{sorted(images)[5]}.jpg"

    def flip_one_byte(name: str, data: bytes) -> tuple[str, bytes]:
        if name == victim:
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return name, data

    tampered = tmp_path / "tampered.zip"
    rewrite_zip(bundle, tampered, flip_one_byte)
    root = wipe(settings, tmp_path)

    with pytest.raises(CommandError, match=r"does not match its SHA-256") as refused:
        command("import_backup", str(tampered))

    assert "\n" not in str(refused.value)
    assert not GenerationResult.objects.exists()
    assert not Generation.objects.exists() and not Prompt.objects.exists()
    assert files(root) == []  # the objects written before the bad one were deleted


@pytest.mark.parametrize(
    "evil_name", ["images/../../evil.jpg", "/etc/evil.jpg", "images/generations/1.exe", "notes.txt"]
)
def test_a_bundle_with_an_entry_that_is_not_ours_is_refused(
    settings: Any, tmp_path: Path, evil_name: str
) -> None:
    populate(results=6)
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")

    def add_evil(name: str, data: bytes) -> tuple[str, bytes]:
        return name, data

    evil = tmp_path / "evil.zip"
    rewrite_zip(bundle, evil, add_evil)
    with zipfile.ZipFile(evil, "a") as archive:
        archive.writestr(evil_name, jpeg_bytes())
    root = wipe(settings, tmp_path)

    with pytest.raises(CommandError, match="refused"):
        command("import_backup", str(evil))

    assert not GenerationResult.objects.exists()
    assert files(root) == []
    assert not (tmp_path / "evil.jpg").exists()


def test_a_row_whose_key_is_not_made_from_its_id_is_refused(settings: Any, tmp_path: Path) -> None:
    populate(results=6)
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")

    def steal_key(name: str, data: bytes) -> tuple[str, bytes]:
        if name == "export.json":
            export = json.loads(data)
            results = [r for g in export["generations"] for r in g["results"] if r["storageKey"]]
            results[0]["storageKey"] = results[1]["storageKey"]
            data = json.dumps(export).encode()
        return name, data

    forged = tmp_path / "forged.zip"
    rewrite_zip(bundle, forged, steal_key)
    wipe(settings, tmp_path)

    with pytest.raises(CommandError, match="storage key not made from its id"):
        command("import_backup", str(forged))


def test_a_non_empty_database_is_refused_without_merge(tmp_path: Path) -> None:
    populate(results=6)
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")
    count = GenerationResult.objects.count()

    with pytest.raises(CommandError, match="--merge"):
        command("import_backup", str(bundle))

    out = command("import_backup", str(bundle), "--merge")
    assert "results 0" in out and f"skipped {count + 2 + 3}" in out
    assert GenerationResult.objects.count() == count


def test_import_of_a_missing_or_garbage_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        command("import_backup", str(tmp_path / "nope.zip"))
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\x01 not json")
    with pytest.raises(CommandError, match="neither a ZIP nor valid JSON"):
        command("import_backup", str(garbage))


def test_api_export_json_shape(token_client: Client, client: Client) -> None:
    populate(results=12)

    assert client.get("/api/export").status_code == 401
    response = token_client.get("/api/export")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"version", "exportedAt", "prompts", "models", "generations"}
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
