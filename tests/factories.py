"""factory-boy factories for the domain, with real images made by Pillow."""

from __future__ import annotations

import io

import factory
from django.contrib.auth import get_user_model
from PIL import Image

from generations.models import Generation, GenerationResult, ImageModel, Prompt


def jpeg_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (40, 200, 40)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


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
    default_params = factory.LazyFunction(
        lambda: {"capabilities": ["text_to_image", "image_to_image"]}
    )


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
