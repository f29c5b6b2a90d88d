"""factory-boy factories for the domain, with real images made by Pillow."""

from __future__ import annotations

import hashlib
import io

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from PIL import Image

from generations.models import Generation, GenerationResult, ImageModel, Prompt
from storage_backends import images as image_storage


def _image_bytes(
    image_format: str, width: int, height: int, color: tuple[int, int, int], **options: int
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, image_format, **options)
    return buffer.getvalue()


def jpeg_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    return _image_bytes("JPEG", width, height, color, quality=90)


def png_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (40, 200, 40)
) -> bytes:
    return _image_bytes("PNG", width, height, color)


def webp_bytes(
    width: int = 16, height: int = 12, color: tuple[int, int, int] = (40, 40, 200)
) -> bytes:
    return _image_bytes("WEBP", width, height, color)


def mark_stored(
    result: GenerationResult,
    *,
    data: bytes | None = None,
    backend: str | None = None,
    thumbnail: bool = True,
) -> GenerationResult:
    """Put real JPEG bytes in storage and mark the row stored, as the store task would.

    `data` (a JPEG) defaults to a small one; `backend` to the active one. With
    `thumbnail`, a real WebP thumbnail is written at the result's thumbnail key.
    """
    data = jpeg_bytes() if data is None else data
    backend = backend or image_storage.active_backend()
    key = image_storage.image_key(result_id=result.pk, extension="jpg")
    image_storage.save_object_bytes(backend=backend, key=key, data=data)
    thumb = ""
    if thumbnail:
        thumb = image_storage.thumbnail_key(result_id=result.pk)
        image_storage.save_object_bytes(backend=backend, key=thumb, data=webp_bytes())
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    GenerationResult.objects.filter(pk=result.pk).update(
        storage_status=GenerationResult.StorageStatus.STORED,
        storage_backend=backend,
        storage_key=key,
        thumbnail_key=thumb,
        content_type="image/jpeg",
        byte_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        stored_at=timezone.now(),
        image_url=result.stable_url,
    )
    result.refresh_from_db()
    return result


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    is_staff = True


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    text = factory.Sequence(lambda n: f"a lighthouse at dusk, study {n}")


class ImageModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ImageModel

    name = factory.Sequence(lambda n: f"Test model {n}")
    provider = ImageModel.Provider.DEMO
    upstream_model_id = factory.Sequence(lambda n: f"demo-model-{n}")
    # Text- and image-to-image, any WIDTHxHEIGHT: the demo upstream's own models.
    max_reference_images = 14


class GenerationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Generation

    prompt_text = factory.Sequence(lambda n: f"a red fox in snow, take {n}")
    size = "1024x1024"


class GenerationResultFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GenerationResult

    generation = factory.SubFactory(GenerationFactory)
    model = factory.SubFactory(ImageModelFactory)
    upstream_model_id = factory.SelfAttribute("model.upstream_model_id")
    status = GenerationResult.Status.SUCCESS
    external_url = factory.Sequence(lambda n: f"https://images.example.test/{n}.jpeg")
    image_url = factory.SelfAttribute("external_url")
    storage_status = GenerationResult.StorageStatus.PENDING
