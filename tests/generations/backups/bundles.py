"""Rows and images for backup tests, and the means to wipe them and to rewrite a bundle.

Images are small real JPEGs written straight into the test's local storage, and
rows are bulk-created, so that a few hundred results round-trip quickly.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from generations.models import Generation, GenerationResult, ImageModel, Prompt, Share, Tag
from generations.services.derivatives import DerivativesOutcome, result_make_derivatives
from storage_backends import images as image_storage
from tests.factories import ImageModelFactory, jpeg_bytes

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
            params_used={"seed": i},
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
    organize(stored, user=user)
    return images


def organize(stored: list[GenerationResult], *, user: Any) -> None:
    """Stars, tags and share links (active, revoked, of a tag) on some of the results."""
    from generations.services.organize import results_add_tags, results_set_favorite
    from generations.services.sharing import share_create, share_revoke

    ids = [row.pk for row in stored]
    results_set_favorite(result_ids=ids[::5], favorite=True)
    results_add_tags(result_ids=ids[::3], names=["Harbour", "night sky"])
    results_add_tags(result_ids=ids[1::4], names=["dusk"])
    Tag.objects.create(name="Unused")  # a tag on nothing is kept too
    share_create(user=user, result_ids=ids[:1])
    share_create(user=None, result_ids=ids[2:5])
    share_revoke(share=share_create(user=user, tag="dusk"), user=user)


def wipe(settings: Any, tmp_path: Path) -> Path:
    """Delete every row the backup holds and start from an empty storage folder."""
    GenerationResult.objects.all().delete()
    Generation.objects.all().delete()
    Prompt.objects.all().delete()
    Tag.objects.all().delete()
    Share.objects.all().delete()
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


def make_derivatives() -> list[DerivativesOutcome]:
    """Run the derivatives stage, as its worker does, for every stored result still
    without its thumbnail (what an import queues once its rows commit)."""
    waiting = GenerationResult.objects.awaiting_derivatives().order_by("pk")
    return [result_make_derivatives(result_id=pk) for pk in waiting.values_list("pk", flat=True)]


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
