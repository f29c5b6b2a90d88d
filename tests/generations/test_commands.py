"""The operator commands, run for real: restore_images, verify_images, migrate_storage.

Images come from the demo upstream over loopback and land in the test's local
storage folder (and, for migrations, in a bucket on moto's S3 server).
"""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from generations.models import Generation, GenerationResult, ImageModel
from generations.upstream.ark import UpstreamImage, client_for, external_url_expiry
from storage_backends.backends.local import TEMPORARY_SUFFIX
from tests.conftest import wait_for, worker_environment
from tests.factories import jpeg_bytes, mark_stored

S = GenerationResult.StorageStatus
REPO_ROOT = Path(__file__).resolve().parents[2]
SEEDREAM_4 = "doubao-seedream-4-0-250828"


def seedream() -> ImageModel:
    """The seeded Seedream 4.0 model (transactional tests flush the data migration's rows)."""
    model, _ = ImageModel.objects.get_or_create(
        upstream_model_id=SEEDREAM_4,
        defaults={"name": "Seedream 4.0"},
    )
    return model


def run(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue()


def upstream_results(count: int, prompt: str = "a red fox in snow") -> list[GenerationResult]:
    """Rows for real demo images, as generate records them, without queueing tasks."""
    model = seedream()
    generation = Generation.objects.create(prompt_text=prompt, size="1280x720")
    rows = []
    for index in range(count):
        items = client_for(model).generate(
            model_id=model.upstream_model_id,
            prompt=f"{prompt} #{index}",
            size="1280x720",
            params={},
            image=None,
            capabilities=model.capabilities,
        )
        item = items[0]
        assert isinstance(item, UpstreamImage), item
        rows.append(
            GenerationResult.objects.create(
                generation=generation,
                model=model,
                upstream_model_id=model.upstream_model_id,
                status=GenerationResult.Status.SUCCESS,
                external_url=item.url,
                image_url=item.url,
                external_url_expires_at=item.expires_at or external_url_expiry(item.url),
                storage_status=S.PENDING,
                params_used={"externalImageUrl": item.url},
            )
        )
    return rows


def image_fetches(demo: Any) -> Counter[str]:
    return Counter(
        urlsplit(entry["path"]).path
        for entry in demo.request_log
        if entry["method"] == "GET" and entry["path"].startswith("/images/")
    )


def stored_result(
    *, color: tuple[int, int, int] = (10, 20, 30), backend: str = "local"
) -> GenerationResult:
    """A stored result whose bytes are written straight into storage (no fetch)."""
    model = seedream()
    generation = Generation.objects.create(prompt_text="a stored test image", size="64x48")
    result = GenerationResult.objects.create(
        generation=generation,
        model=model,
        upstream_model_id=model.upstream_model_id,
        status=GenerationResult.Status.SUCCESS,
        external_url="https://images.example.test/gone.jpeg",
    )
    return mark_stored(result, data=jpeg_bytes(color=color), backend=backend)


def served_bytes(client: Client, result_id: int) -> bytes:
    """What a browser gets from the stable URL, following an S3 redirect for real."""
    response = client.get(f"/api/images/{result_id}")
    if response.status_code == 302:
        fetched = requests.get(response["Location"], timeout=10)
        assert fetched.status_code == 200, fetched.text
        return fetched.content
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


# --- restore_images ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_restore_sync_stores_every_result_once_and_a_rerun_stores_nothing(
    demo: Any, image_storage_root: Path
) -> None:
    results = upstream_results(6)
    demo.clear_request_log()

    out = run("restore_images", "--sync", "--concurrency", "3")

    assert "stored 6, failed 0, expired 0, skipped 0" in out
    for result in results:
        result.refresh_from_db()
        assert result.storage_status == S.STORED
        data = (image_storage_root / result.storage_key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == result.sha256
        assert result.image_url == f"/api/images/{result.pk}"
    fetches = image_fetches(demo)
    assert sorted(fetches) == sorted(urlsplit(r.external_url).path for r in results)
    assert set(fetches.values()) == {1}

    again = run("restore_images", "--sync")

    assert "stored 0, failed 0, expired 0, skipped 0" in again
    assert image_fetches(demo) == fetches  # nothing fetched twice


@pytest.mark.django_db(transaction=True)
def test_restore_dry_run_changes_nothing(demo: Any, image_storage_root: Path) -> None:
    results = upstream_results(3)
    demo.clear_request_log()

    out = run("restore_images", "--sync", "--dry-run", "--verbosity", "2")

    assert "would store 3 results" in out
    assert all(f"result {r.pk}" in out for r in results)
    assert not image_fetches(demo)
    assert set(GenerationResult.objects.values_list("storage_status", flat=True)) == {S.PENDING}
    assert not any(p.is_file() for p in image_storage_root.rglob("*"))


@pytest.mark.django_db(transaction=True)
def test_restore_filters_limit_newest_first_and_counts_expired(demo: Any) -> None:
    older, middle, newest = upstream_results(3)
    GenerationResult.objects.filter(pk=older.pk).update(
        storage_status=S.FAILED, external_url_expires_at=timezone.now() - timedelta(days=1)
    )

    out = run("restore_images", "--sync", "--status", "pending", "--limit", "1")
    assert "stored 1, failed 0, expired 0, skipped 0" in out
    newest.refresh_from_db()
    middle.refresh_from_db()
    assert newest.storage_status == S.STORED
    assert middle.storage_status == S.PENDING

    out = run("restore_images", "--sync", "--since", timezone.now().date().isoformat())
    assert "stored 1, failed 0, expired 1, skipped 0" in out
    older.refresh_from_db()
    assert older.storage_status == S.EXPIRED
    assert older.image_url == older.external_url


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2024-13-40"], "is not a date"),
        (["--limit", "0"], "must be 1 or more"),
        (["--concurrency", "many"], "is not a whole number"),
    ],
)
def test_restore_bad_arguments_give_one_clear_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("restore_images", *args)


@pytest.mark.django_db(transaction=True)
def test_a_backfill_killed_halfway_and_run_again_stores_each_result_once(
    demo: Any, settings: Any, image_storage_root: Path
) -> None:
    results = upstream_results(30, prompt="[demo:slow_image=1.5] a slow harbour")
    demo.clear_request_log()
    command = [sys.executable, "manage.py", "restore_images", "--sync", "--concurrency", "3"]

    first = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=worker_environment(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def some_stored() -> bool:
            return GenerationResult.objects.filter(storage_status=S.STORED).count() >= 4

        wait_for(some_stored, timeout=60, interval=0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    stored_first = {
        r.pk: r.stored_at for r in GenerationResult.objects.filter(storage_status=S.STORED)
    }
    assert 4 <= len(stored_first) < 30, "the first run was not stopped halfway"
    assert GenerationResult.objects.filter(storage_status=S.STORING).exists(), (
        "the kill should have left claims behind"
    )
    time.sleep(1.2)  # the lost claims' lease (1 s in the second run) runs out

    second = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=worker_environment(settings, STORAGE_LEASE_SECONDS="1"),
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert second.returncode == 0, second.stdout + second.stderr
    assert f"stored {30 - len(stored_first)}, failed 0, expired 0, skipped 0" in second.stdout
    fetches = image_fetches(demo)
    for result in results:
        result.refresh_from_db()
        assert result.storage_status == S.STORED
        data = (image_storage_root / result.storage_key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == result.sha256
        path = urlsplit(result.external_url).path
        if result.pk in stored_first:
            assert result.stored_at == stored_first[result.pk]  # not stored again
            assert fetches[path] == 1  # not fetched again
        else:
            assert 1 <= fetches[path] <= 2  # at most once more, if the kill cut it off
    # A write the kill cut off may leave its hidden part-file (".76.jpg.<hex>.tmp"): never
    # a key, and listed by verify_images as an orphan once it is an hour old.
    stored_files = sorted(
        p.name
        for p in (image_storage_root / "generations").iterdir()
        if not (p.name.startswith(".") and p.name.endswith(TEMPORARY_SUFFIX))
    )
    assert stored_files == sorted(f"{r.pk}.jpg" for r in results)


# --- verify_images ----------------------------------------------------------------


@pytest.mark.django_db
def test_verify_draws_one_progress_line_on_its_stderr_and_none_at_verbosity_0(
    image_storage_root: Path,
) -> None:
    for shade in range(3):
        stored_result(color=(shade, shade, shade))

    err = io.StringIO()
    call_command("verify_images", stdout=io.StringIO(), stderr=err)
    bar = err.getvalue()
    assert "verifying" in bar and "3/3" in bar
    assert bar.count("\n") <= 1, "the bar redraws in place instead of a line per image"

    quiet = io.StringIO()
    call_command("verify_images", "--verbosity", "0", stdout=io.StringIO(), stderr=quiet)
    assert quiet.getvalue() == ""


@pytest.mark.django_db
def test_verify_finds_corrupt_missing_and_orphan_objects_and_repair_marks_them(
    image_storage_root: Path,
) -> None:
    healthy = stored_result(color=(1, 2, 3))
    corrupt = stored_result(color=(4, 5, 6))
    missing = stored_result(color=(7, 8, 9))
    thumbless = stored_result(color=(10, 11, 12))
    corrupt_path = image_storage_root / corrupt.storage_key
    data = bytearray(corrupt_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt_path.write_bytes(bytes(data))
    (image_storage_root / missing.storage_key).unlink()
    (image_storage_root / thumbless.thumbnail_key).unlink()
    orphan = image_storage_root / "generations" / "999999.jpg"
    orphan.write_bytes(jpeg_bytes())

    out = io.StringIO()
    with pytest.raises(CommandError, match="problems found"):
        call_command("verify_images", stdout=out, stderr=io.StringIO())
    report = out.getvalue()
    assert "checked 4, ok 1, missing 1, corrupt 1" in report
    assert "thumbnails missing 1, orphans 1" in report
    assert f"corrupt: result {corrupt.pk}" in report
    assert f"missing: result {missing.pk}" in report
    assert "orphan: local:generations/999999.jpg" in report
    assert GenerationResult.objects.filter(storage_status=S.STORED).count() == 4  # report only

    with pytest.raises(CommandError):
        call_command("verify_images", "--repair", stdout=io.StringIO(), stderr=io.StringIO())

    for broken in (corrupt, missing):
        broken.refresh_from_db()
        assert broken.storage_status == S.PENDING
        assert broken.storage_key == "" and broken.sha256 == "" and broken.storage_backend == ""
        assert broken.image_url == broken.external_url
        assert "verify_images" in broken.storage_error
    healthy.refresh_from_db()
    assert healthy.storage_status == S.STORED
    thumb = (image_storage_root / thumbless.thumbnail_key).read_bytes()
    assert thumb[8:12] == b"WEBP"  # rebuilt from the stored image
    assert orphan.exists()  # --repair never deletes objects

    # The corrupt object and the broken rows' thumbnails are orphans now.
    with pytest.raises(CommandError):
        call_command(
            "verify_images", "--delete-orphans", stdout=io.StringIO(), stderr=io.StringIO()
        )
    assert not orphan.exists()
    assert not corrupt_path.exists()

    clean = run("verify_images")
    assert "checked 2, ok 2, missing 0, corrupt 0, unreadable 0" in clean
    assert "orphans 0" in clean


@pytest.mark.django_db
def test_verify_leaves_an_object_being_stored_alone(image_storage_root: Path) -> None:
    result = stored_result()
    GenerationResult.objects.filter(pk=result.pk).update(storage_status=S.STORING)

    out = run("verify_images")

    assert "checked 0" in out and "orphans 0" in out
    assert (image_storage_root / result.storage_key).exists()


# --- migrate_storage ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the command copies on its own threads
def test_migrate_local_to_s3_and_back_keeps_every_stable_url_working(
    moto_s3: Any, image_storage_root: Path, token_client: Client
) -> None:
    results = [stored_result(color=(i * 40, 90, 200 - i * 40)) for i in range(4)]
    expected = {r.pk: (image_storage_root / r.storage_key).read_bytes() for r in results}
    assert {r.pk: served_bytes(token_client, r.pk) for r in results} == expected

    out = run("migrate_storage", "--to", "s3", "--limit", "2")
    assert "moved 2, skipped 0, failed 0 (to s3)" in out
    backends = Counter(GenerationResult.objects.values_list("storage_backend", flat=True))
    assert backends == {"s3": 2, "local": 2}  # mid-migration: a row on each backend
    assert {r.pk: served_bytes(token_client, r.pk) for r in results} == expected

    run("migrate_storage", "--to", "s3")
    again = run("migrate_storage", "--to", "s3")
    assert "moved 0, skipped 0, failed 0" in again  # resumable: nothing left to do
    for result in results:
        result.refresh_from_db()
        assert result.storage_backend == "s3"
        assert result.image_url == f"/api/images/{result.pk}"
        assert moto_s3.get(result.storage_key) == expected[result.pk]
        assert moto_s3.get(result.thumbnail_key)
        assert not (image_storage_root / result.storage_key).exists()
    assert {r.pk: served_bytes(token_client, r.pk) for r in results} == expected

    run("migrate_storage", "--to", "local")
    assert moto_s3.keys() == []
    for result in results:
        result.refresh_from_db()
        assert result.storage_backend == "local"
        assert (image_storage_root / result.storage_key).read_bytes() == expected[result.pk]
    assert {r.pk: served_bytes(token_client, r.pk) for r in results} == expected


@pytest.mark.django_db(transaction=True)  # the command copies on its own threads
def test_migrate_keep_source_and_a_corrupt_source_is_not_moved(
    moto_s3: Any, image_storage_root: Path
) -> None:
    good = stored_result(color=(200, 10, 10))
    bad = stored_result(color=(10, 200, 10))
    (image_storage_root / bad.storage_key).write_bytes(jpeg_bytes(color=(0, 0, 0)))

    with pytest.raises(CommandError, match="1 images could not be moved"):
        run("migrate_storage", "--to", "s3", "--keep-source")

    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.storage_backend == "s3"
    assert (image_storage_root / good.storage_key).exists()  # --keep-source
    assert bad.storage_backend == "local"  # untouched
    assert moto_s3.keys() == sorted([good.storage_key, good.thumbnail_key])


@pytest.mark.django_db
def test_migrate_to_an_unconfigured_backend_is_one_clear_error(settings: Any) -> None:
    stored_result()
    settings.STORAGES = {k: v for k, v in settings.STORAGES.items() if k != "images_s3"}

    with pytest.raises(CommandError, match=r"cannot migrate to 's3'.*not configured"):
        run("migrate_storage", "--to", "s3")
    assert GenerationResult.objects.get().storage_backend == "local"


@pytest.mark.django_db(transaction=True)  # the command copies on its own threads
def test_migrate_catches_an_upload_damaged_on_the_way_and_leaves_nothing_half_done(
    moto_s3: Any, faulty_s3_link: Any, image_storage_root: Path
) -> None:
    """One byte of one image flipped between us and the endpoint. S3 itself refuses a
    body that does not match its Content-MD5; moto's server keeps it, as an endpoint
    that ignores the header would, and the ETag it answers (the MD5 of what it kept)
    is what catches it: no second download."""
    good = stored_result(color=(200, 10, 10))
    damaged = stored_result(color=(10, 200, 10))
    original = (image_storage_root / damaged.storage_key).read_bytes()
    faulty_s3_link.damage(damaged.storage_key)

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 images could not be moved"):
        call_command("migrate_storage", "--to", "s3", stdout=out, stderr=err)

    assert faulty_s3_link.damaged_puts == 1
    assert f"result {damaged.pk}: s3:{damaged.storage_key} was written, but the storage " in (
        err.getvalue()
    )
    assert "failed 1" in out.getvalue()
    damaged.refresh_from_db()
    assert (damaged.storage_backend, damaged.storage_status) == ("local", S.STORED)
    assert (image_storage_root / damaged.storage_key).read_bytes() == original
    assert (image_storage_root / damaged.thumbnail_key).exists()
    good.refresh_from_db()
    assert good.storage_backend == "s3"
    # Checked without a second download: nothing was read from the bucket.
    assert [method for method, _path in faulty_s3_link.requests if method == "GET"] == []
    # Neither the damaged object nor anything else of its result stays in the bucket.
    assert moto_s3.keys() == sorted([good.storage_key, good.thumbnail_key])


@pytest.mark.django_db(transaction=True)  # the command copies on its own threads
def test_migrate_reads_a_multipart_upload_back_and_catches_its_damage(
    moto_s3: Any, faulty_s3_link: Any, image_storage_root: Path, settings: Any
) -> None:
    """A multipart upload's ETag is no MD5 of the object: it is read back instead."""
    from boto3.s3.transfer import TransferConfig

    storages = dict(settings.STORAGES)
    s3 = dict(storages["images_s3"])
    s3["OPTIONS"] = {**s3["OPTIONS"], "transfer_config": TransferConfig(multipart_threshold=1)}
    storages["images_s3"] = s3
    settings.STORAGES = storages
    good = stored_result(color=(200, 10, 10))
    good_bytes = (image_storage_root / good.storage_key).read_bytes()
    damaged = stored_result(color=(10, 200, 10))
    faulty_s3_link.damage(damaged.storage_key)

    err = io.StringIO()
    with pytest.raises(CommandError, match="1 images could not be moved"):
        call_command("migrate_storage", "--to", "s3", stdout=io.StringIO(), stderr=err)

    assert faulty_s3_link.damaged_puts >= 1
    assert f"result {damaged.pk}: s3:{damaged.storage_key} read back with other bytes" in (
        err.getvalue()
    )
    damaged.refresh_from_db()
    assert damaged.storage_backend == "local"
    good.refresh_from_db()
    assert good.storage_backend == "s3"
    assert moto_s3.get(good.storage_key) == good_bytes
    assert moto_s3.keys() == sorted([good.storage_key, good.thumbnail_key])
