"""Keeping the bytes: the store service against the demo upstream and its faults.

Everything here runs for real over loopback: the demo upstream renders and serves
images, the safe fetch downloads them, the local storage writes them.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection
from django.test import Client
from PIL import ImageFile

from generations.models import GenerationResult, ImageModel
from generations.services.derivatives import DerivativesOutcome, result_make_derivatives
from generations.services.generate import generation_create
from generations.services.storing import StoreOutcome, result_store_image
from tests.generations.sample_images import JPEG, PNG, WEBP
from tests.image_host import ImageHost

pytestmark = pytest.mark.django_db

S = GenerationResult.StorageStatus


def generate(prompt: str, *, size: str = "1280x720") -> GenerationResult:
    model = ImageModel.objects.get(upstream_model_id="doubao-seedream-4-0-250828")
    generation = generation_create(user=None, models=[model], prompt_text=prompt, size=size)
    result = generation.results.get()
    assert result.status == GenerationResult.Status.SUCCESS, result.error_message
    return result


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_generated_image_is_stored_byte_for_byte(
    demo: Any, image_storage_root: Path, token_client: Client
) -> None:
    result = generate("a red fox in snow")
    upstream_bytes = requests.get(result.external_url, timeout=10).content

    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED

    result.refresh_from_db()
    assert result.storage_status == S.STORED
    assert result.storage_backend == "local"
    assert result.storage_key == f"generations/{result.pk}.jpg"
    assert result.content_type == "image/jpeg"
    assert (result.width, result.height) == (1280, 720)
    assert result.byte_size == len(upstream_bytes)
    assert result.sha256 == hashlib.sha256(upstream_bytes).hexdigest()
    assert result.image_url == f"/api/images/{result.pk}"
    assert result.params_used_json(external_url=result.external_url)["externalImageUrl"] == (
        result.external_url
    )
    assert "externalImageUrl" not in result.params_used  # the column is the record
    assert (image_storage_root / result.storage_key).read_bytes() == upstream_bytes
    assert result.thumbnail_key == ""  # the derivatives stage makes it, off the safe path
    assert result_make_derivatives(result_id=result.pk) is DerivativesOutcome.MADE
    result.refresh_from_db()
    assert (image_storage_root / result.thumbnail_key).read_bytes()[8:12] == b"WEBP"

    served = token_client.get(f"/api/images/{result.pk}")
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == upstream_bytes


def test_storing_twice_is_harmless(demo: Any, image_storage_root: Path) -> None:
    result = generate("a lighthouse")
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED
    assert result_store_image(result_id=result.pk) is StoreOutcome.SKIPPED
    image_fetches = [e for e in demo.request_log if e["path"].startswith("/images/")]
    assert len(image_fetches) == 1
    assert result_make_derivatives(result_id=result.pk) is DerivativesOutcome.MADE
    assert result_make_derivatives(result_id=result.pk) is DerivativesOutcome.SKIPPED
    assert stored_files(image_storage_root) == [
        f"generations/{result.pk}.jpg",
        f"thumbnails/{result.pk}.webp",
    ]


def test_png_is_stored_with_its_own_type(demo: Any, image_storage_root: Path) -> None:
    result = generate("a pixel cat [demo:png]")
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED
    result.refresh_from_db()
    assert (result.content_type, result.storage_key) == (
        "image/png",
        f"generations/{result.pk}.png",
    )


def test_wrong_declared_type_is_stored_with_the_sniffed_type(demo: Any) -> None:
    result = generate("a mislabelled image [demo:wrong_type]")
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED
    result.refresh_from_db()
    assert result.content_type == "image/png"  # served as image/jpeg, really a PNG


def test_flaky_image_host_is_retried_then_stored(demo: Any) -> None:
    result = generate("a flaky host [demo:flaky_image=1]")
    assert result_store_image(result_id=result.pk, will_retry=True) is StoreOutcome.RETRY
    result.refresh_from_db()
    assert result.storage_status == S.PENDING
    assert "503" in result.storage_error or "unavailable" in result.storage_error
    assert result.image_url == result.external_url
    assert result_store_image(result_id=result.pk, will_retry=True) is StoreOutcome.STORED
    result.refresh_from_db()
    assert result.storage_attempts == 2
    assert result.storage_error == ""
    assert "storageError" not in result.params_used_json()


HOSTILE = [
    ("[demo:expired]", S.EXPIRED, "image_expired"),
    ("[demo:html]", S.FAILED, "not_an_image"),
    ("[demo:svg]", S.FAILED, "not_an_image"),
    ("[demo:oversized=3]", S.FAILED, "image_too_large"),
    ("[demo:oversized_chunked=3]", S.FAILED, "image_too_large"),
    ("[demo:truncated]", S.FAILED, "connection_failed"),
    ("[demo:bomb]", S.FAILED, "image_too_many_pixels"),
    ("[demo:redirect_loopback]", S.FAILED, "address_refused"),
    ("[demo:redirect=4]", S.FAILED, "too_many_redirects"),
]


@pytest.mark.parametrize(("marker", "status", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_upstream_is_refused_and_nothing_is_kept(
    demo: Any, settings: Any, image_storage_root: Path, marker: str, status: str, code: str
) -> None:
    settings.IMAGE_FETCH_MAX_BYTES = 2 * 1024 * 1024
    result = generate(f"a trap {marker}")
    demo.clear_request_log()

    result_store_image(result_id=result.pk)

    result.refresh_from_db()
    assert result.storage_status == status
    assert result.storage_error.startswith(code), result.storage_error
    assert result.image_url == result.external_url  # the external URL is never lost
    assert result.params_used_json()["storageError"] == result.storage_error
    assert not set(result.params_used) & {"externalImageUrl", "storageError"}
    assert stored_files(image_storage_root) == []
    if "host=" in marker or "loopback" in marker:
        # No connection was ever made to the refused spelling of loopback.
        assert all(e["host"].startswith("127.0.0.1:") for e in demo.request_log), demo.request_log


@pytest.mark.parametrize(
    "form", ["127.0.0.2", "[::1]", "2130706433", "[::ffff:127.0.0.1]", "localhost"]
)
def test_an_image_url_at_another_spelling_of_loopback_is_refused_as_answered(
    demo: Any, image_storage_root: Path, form: str
) -> None:
    """Plain http from a host that is not allowed: the result fails with nothing to fetch."""
    model = ImageModel.objects.get(upstream_model_id="doubao-seedream-4-0-250828")
    generation = generation_create(
        user=None, models=[model], prompt_text=f"a trap [demo:host={form}]", size="1280x720"
    )
    result = generation.results.get()
    assert (result.status, result.error_code) == (GenerationResult.Status.FAILED, "UnsafeImageUrl")
    assert (result.external_url, result.image_url) == ("", "")
    demo.clear_request_log()

    assert result_store_image(result_id=result.pk) is StoreOutcome.SKIPPED
    assert demo.request_log == []
    assert stored_files(image_storage_root) == []


def test_unreachable_upstream_keeps_the_external_url(
    settings: Any, demo: Any, image_storage_root: Path
) -> None:
    result = generate("a fox")
    demo.stop()  # the image host is gone
    assert result_store_image(result_id=result.pk, will_retry=False) is StoreOutcome.FAILED
    result.refresh_from_db()
    assert result.storage_status == S.FAILED
    assert result.image_url == result.external_url
    assert result.storage_error
    assert stored_files(image_storage_root) == []


def test_storage_failure_is_recorded_and_leaves_no_object(
    demo: Any, settings: Any, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the storage folder should be")
    storages = dict(settings.STORAGES)
    storages["images_local"] = {
        "BACKEND": "storage_backends.backends.local.LocalImageStorage",
        "OPTIONS": {"location": str(blocked)},
    }
    settings.STORAGES = storages
    result = generate("a fox")
    assert result_store_image(result_id=result.pk, will_retry=False) is StoreOutcome.FAILED
    result.refresh_from_db()
    assert result.storage_status == S.FAILED
    assert "could not write" in result.storage_error
    assert result.image_url == result.external_url


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_store_once(demo: Any, image_storage_root: Path) -> None:
    """The conditional claim lets exactly one of two concurrent attempts store."""
    result = generate("a contested fox [demo:slow_image=0.5]")
    demo.clear_request_log()
    outcomes: list[StoreOutcome] = []
    barrier = threading.Barrier(2)

    def attempt() -> None:
        barrier.wait()
        try:
            outcomes.append(result_store_image(result_id=result.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(o.value for o in outcomes) == ["skipped", "stored"]
    assert len([e for e in demo.request_log if e["path"].startswith("/images/")]) == 1
    result.refresh_from_db()
    assert result.storage_attempts == 1


def test_a_lost_claim_is_taken_again_after_the_lease(demo: Any, settings: Any) -> None:
    settings.STORAGE_LEASE_SECONDS = 60
    result = generate("a fox")
    GenerationResult.objects.filter(pk=result.pk).update(
        storage_status=S.STORING, storage_claimed_at="2026-01-01T00:00Z"
    )
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED

    other = generate("another fox")
    from django.utils import timezone

    GenerationResult.objects.filter(pk=other.pk).update(
        storage_status=S.STORING, storage_claimed_at=timezone.now()
    )
    assert result_store_image(result_id=other.pk) is StoreOutcome.SKIPPED  # someone holds it


def test_deleting_a_result_deletes_its_objects_after_commit(
    demo: Any, image_storage_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    from generations.services.deleting import results_delete

    result = generate("a fox")
    result_store_image(result_id=result.pk)
    assert stored_files(image_storage_root)
    with django_capture_on_commit_callbacks(execute=True):
        assert results_delete(result_ids=[result.pk]) == 1
    assert stored_files(image_storage_root) == []
    assert not GenerationResult.objects.filter(pk=result.pk).exists()


def test_a_stored_image_outlives_its_upstream_url(settings: Any, staff_client: Client) -> None:
    """The point of genvault: once stored, the image is served after Ark's link dies."""
    import time

    from generations.upstream.demo.server import DemoUpstream

    short_lived_demo = DemoUpstream(port=0, url_ttl=2, extra_loopback_listeners=False)
    with short_lived_demo as short_lived:
        settings.ARK_API_KEY = ""
        settings.DEMO_UPSTREAM_URL = short_lived.base_url
        settings.IMAGE_FETCH_ALLOWED_HOSTS = [short_lived.base_url.split("://", 1)[1]]
        result = generate("a fleeting fox")
        upstream_bytes = requests.get(result.external_url, timeout=10).content
        assert result_store_image(result_id=result.pk) is StoreOutcome.STORED
        time.sleep(3)
        # Ark's link is dead...
        assert requests.get(result.external_url, timeout=10).status_code == 403

    served = staff_client.get(f"/api/images/{result.pk}")
    assert served.status_code == 200
    assert b"".join(served.streaming_content) == upstream_bytes


def test_the_sweep_deletes_downloads_a_dead_worker_left(settings: Any, tmp_path: Path) -> None:
    import os
    import time

    from generations.services.storing import downloads_abandoned_delete

    settings.IMAGE_FETCH_TEMP_DIR = str(tmp_path / "downloads")
    folder = tmp_path / "downloads"
    folder.mkdir()
    abandoned = folder / "fetch-abandoned.part"
    in_flight = folder / "fetch-in-flight.part"
    not_ours = folder / "notes.txt"
    for path in (abandoned, in_flight, not_ours):
        path.write_bytes(b"\xff\xd8 partial")
    long_ago = time.time() - settings.STORAGE_LEASE_SECONDS - 60
    os.utime(abandoned, (long_ago, long_ago))
    os.utime(not_ours, (long_ago, long_ago))

    assert downloads_abandoned_delete() == 1
    assert sorted(p.name for p in folder.iterdir()) == ["fetch-in-flight.part", "notes.txt"]


def test_downloads_go_to_the_configured_folder_and_are_removed(
    demo: Any, settings: Any, tmp_path: Path
) -> None:
    settings.IMAGE_FETCH_TEMP_DIR = str(tmp_path / "downloads")
    result = generate("a tidy fox")
    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED
    assert list((tmp_path / "downloads").iterdir()) == []


def test_deleting_a_generation_in_the_admin_deletes_its_images(
    demo: Any,
    image_storage_root: Path,
    admin_client: Client,
    django_capture_on_commit_callbacks: Any,
) -> None:
    result = generate("a fox the admin will delete")
    result_store_image(result_id=result.pk)
    assert stored_files(image_storage_root)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/generations/generation/{result.generation_id}/delete/", {"post": "yes"}
        )
    assert response.status_code == 302
    assert not GenerationResult.objects.filter(pk=result.pk).exists()
    assert stored_files(image_storage_root) == []


# --- the safe stage: cheap checks only ------------------------------------------------------


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every object key storing writes, recorded on its way to the real storage."""
    from storage_backends import images as image_storage

    keys: list[str] = []
    real_save = image_storage.save_object_from_path

    def save(*, backend: str, key: str, path: Path) -> None:
        keys.append(key)
        real_save(backend=backend, key=key, path=path)

    monkeypatch.setattr(image_storage, "save_object_from_path", save)
    return keys


CUT_SHORT = [
    ("cut.jpg", JPEG[: len(JPEG) - 700]),
    ("cut.png", PNG[: len(PNG) - 500]),
    ("cut.webp", WEBP[: len(WEBP) - 300]),
]


@pytest.mark.parametrize(("name", "data"), CUT_SHORT, ids=[c[0] for c in CUT_SHORT])
def test_an_image_cut_short_is_refused_and_its_bytes_never_written(
    image_host: ImageHost, image_storage_root: Path, writes: list[str], name: str, data: bytes
) -> None:
    """Sent whole (status 200, its full Content-Length) but cut short: a host's broken file."""
    result = image_host.result_for(name, data)

    assert result_store_image(result_id=result.pk) is StoreOutcome.FAILED

    result.refresh_from_db()
    assert result.storage_status == S.FAILED
    assert result.storage_error.startswith("not_an_image"), result.storage_error
    assert result.image_url == result.external_url
    assert writes == []
    assert stored_files(image_storage_root) == []


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding pixels fails the test: every format's decode ends in ImageFile.load."""

    def decode(self: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)


WHOLE = [
    ("whole.jpg", JPEG, "image/jpeg"),
    ("whole.png", PNG, "image/png"),
    ("whole.webp", WEBP, "image/webp"),
]


@pytest.mark.parametrize(("name", "data", "content_type"), WHOLE, ids=[w[0] for w in WHOLE])
def test_storing_decodes_no_pixel_and_leaves_the_thumbnail_for_later(
    image_host: ImageHost,
    image_storage_root: Path,
    no_decoding: None,
    name: str,
    data: bytes,
    content_type: str,
) -> None:
    result = image_host.result_for(name, data)

    assert result_store_image(result_id=result.pk) is StoreOutcome.STORED

    result.refresh_from_db()
    assert (result.storage_status, result.content_type) == (S.STORED, content_type)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (image_storage_root / result.storage_key).read_bytes() == data
    assert result.thumbnail_key == ""
    assert not result.has_thumbnail
    assert stored_files(image_storage_root) == [result.storage_key]


def test_the_derivatives_are_queued_once_the_stored_row_commits(
    image_host: ImageHost, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    from generations.services import storing

    queued: list[int] = []
    monkeypatch.setattr(
        storing, "results_enqueue_derivatives", lambda *, result_ids: queued.extend(result_ids)
    )
    result = image_host.result_for("queued.jpg", JPEG)

    with django_capture_on_commit_callbacks(execute=True):
        assert result_store_image(result_id=result.pk) is StoreOutcome.STORED
        assert queued == []

    assert queued == [result.pk]
