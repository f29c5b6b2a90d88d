"""The image storage's error rule: only storage and network errors mean "unavailable"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from generations.models import GenerationResult, ImageModel
from generations.services.derivatives import result_make_derivatives
from generations.services.generate import generation_create
from generations.services.storing import StoreOutcome, result_store_image
from storage_backends import images as image_storage
from storage_backends.backends.local import LocalImageStorage

pytestmark = pytest.mark.django_db

S = GenerationResult.StorageStatus


def generate(prompt: str) -> GenerationResult:
    model = ImageModel.objects.get(upstream_model_id="doubao-seedream-4-0-250828")
    generation = generation_create(user=None, models=[model], prompt_text=prompt, size="1280x720")
    return generation.results.get()


def test_a_full_disk_is_storage_unavailable_and_recorded(
    demo: Any, image_storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(self: Any, name: str, content: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalImageStorage, "_save", disk_full)
    result = generate("a lighthouse on a full disk")

    assert result_store_image(result_id=result.pk) is StoreOutcome.FAILED

    result.refresh_from_db()
    assert result.storage_status == S.FAILED
    assert result.storage_error.startswith("could not write generations/")
    assert "No space left on device" in result.storage_error
    assert result.image_url == result.external_url


def test_a_programming_error_in_a_storage_call_surfaces_as_itself(
    demo: Any, image_storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is not "could not write": it is not recorded, retried or hidden."""

    def buggy_save(self: Any, name: str, content: Any) -> str:
        raise TypeError("save() got an unexpected keyword argument")

    monkeypatch.setattr(LocalImageStorage, "_save", buggy_save)
    result = generate("a lighthouse with a bug")

    with pytest.raises(TypeError, match="unexpected keyword"):
        result_store_image(result_id=result.pk)

    result.refresh_from_db()
    assert "could not write" not in result.storage_error
    assert result.storage_status != S.FAILED
    assert not any(image_storage_root.rglob("*.jpg"))


def test_a_programming_error_in_the_thumbnail_write_leaves_the_image_stored_alone(
    demo: Any, image_storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = LocalImageStorage._save

    def save_with_a_bug_in_thumbnails(self: Any, name: str, content: Any) -> str:
        if name.startswith("thumbnails/"):
            raise TypeError("a bug in the thumbnail write")
        return real_save(self, name, content)

    monkeypatch.setattr(LocalImageStorage, "_save", save_with_a_bug_in_thumbnails)
    result = generate("a lighthouse whose thumbnail write has a bug")
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED

    with pytest.raises(TypeError, match="thumbnail write"):
        result_make_derivatives(result_id=result.pk)

    result.refresh_from_db()
    assert [str(p.relative_to(image_storage_root)) for p in image_storage_root.rglob("*.*")] == [
        result.storage_key
    ]
    assert (result.storage_status, result.thumbnail_key) == (S.STORED, "")
    assert result.image_url == result.stable_url


def test_reading_a_missing_object_is_not_found_not_unavailable(image_storage_root: Path) -> None:
    with pytest.raises(FileNotFoundError):
        image_storage.open_object(backend="local", key="generations/404.jpg")
    with pytest.raises(FileNotFoundError):
        list(image_storage.iter_object_chunks(backend="local", key="generations/404.jpg"))
    with pytest.raises(FileNotFoundError):
        image_storage.object_size(backend="local", key="generations/404.jpg")
