"""Importing a backup for real: export to a file, wipe everything, import, compare.

Bundles made by a stranger, written by hand, are in tests/security/test_hostile_bundles.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone

from generations.backups.export import export_data
from generations.models import (
    Generation,
    GenerationResult,
    ImageModel,
    Prompt,
    ResultTag,
    Share,
    Tag,
)
from generations.services.derivatives import DerivativesOutcome
from generations.services.storing import results_due_for_derivatives
from storage_backends import images as image_storage
from tests.factories import jpeg_bytes
from tests.generations.backups.bundles import (
    SEEDREAM_4,
    S,
    command,
    comparable,
    files,
    make_derivatives,
    populate,
    rewrite_zip,
    wipe,
)
from tests.test_settings import manage

pytestmark = pytest.mark.django_db


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
    assert make_derivatives() == [DerivativesOutcome.MADE] * len(images)
    after = comparable(export_data())
    assert after == before
    for result_id, data in images.items():
        assert (root / f"generations/{result_id}.jpg").read_bytes() == data
        assert (root / f"thumbnails/{result_id}.webp").exists()
    assert len(files(root)) == 2 * len(images)
    assert Generation.objects.filter(reference_result__isnull=False).count() == 1
    # New rows get fresh ids, after the imported ones.
    assert Prompt.objects.create(text="new").pk > max(p["id"] for p in before["prompts"])


def test_a_zip_import_stores_each_image_first_and_leaves_its_thumbnail_to_the_queue(
    settings: Any, tmp_path: Path
) -> None:
    images = populate(results=12)
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")
    root = wipe(settings, tmp_path)

    out = command("import_backup", str(bundle))

    assert f"images {len(images)}, thumbnails queued {len(images)}" in out
    stored = GenerationResult.objects.filter(storage_status=S.STORED)
    assert set(stored.values_list("pk", flat=True)) == set(images)
    assert not stored.exclude(thumbnail_key="").exists()  # the gallery shows a placeholder
    assert sorted(files(root)) == sorted(root / f"generations/{pk}.jpg" for pk in images)
    # Tasks lost with their worker: once a task's time limit has passed, the sweep finds
    # every image still waiting and queues it again.
    stored.update(stored_at=timezone.now() - timedelta(hours=1))
    assert set(results_due_for_derivatives()) == set(images)

    assert make_derivatives() == [DerivativesOutcome.MADE] * len(images)
    assert len(files(root)) == 2 * len(images)
    assert results_due_for_derivatives() == []


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


def test_a_bundle_with_copies_inside_params_used_imports_them_into_the_columns(
    tmp_path: Path,
) -> None:
    """Bundles written while params_used kept copies of the external URL and the storage
    error still import: the columns take them, and params_used keeps none."""
    both = "https://images.example.test/both.jpeg"
    only_copy = "https://images.example.test/copy.jpeg"
    result: dict[str, Any] = {
        "model": SEEDREAM_4,
        "status": "SUCCESS",
        "storageStatus": "failed",
        "storageAttempts": 5,
    }
    bundle = tmp_path / "old.json"
    bundle.write_text(
        json.dumps(
            {
                "version": 1,
                "exportedAt": "2025-11-02T08:00:00+00:00",
                "prompts": [],
                "models": [],
                "generations": [
                    {
                        "id": 40,
                        "prompt": "a red fox in snow",
                        "results": [
                            result
                            | {
                                "id": 41,
                                "imageUrl": both,
                                "externalImageUrl": both,
                                "storageError": "timed out",
                                "paramsUsed": {
                                    "seed": 1,
                                    "externalImageUrl": both,
                                    "storageError": "timed out",
                                },
                            },
                            result
                            | {
                                "id": 42,
                                "paramsUsed": {
                                    "seed": 2,
                                    "externalImageUrl": only_copy,
                                    "storageError": "HTTP 503",
                                },
                            },
                        ],
                    }
                ],
            }
        )
    )

    command("import_backup", str(bundle))

    rows = {r.pk: r for r in GenerationResult.objects.all()}
    assert (rows[41].params_used, rows[41].external_url, rows[41].storage_error) == (
        {"seed": 1},
        both,
        "timed out",
    )
    assert (rows[42].params_used, rows[42].external_url, rows[42].storage_error) == (
        {"seed": 2},
        only_copy,
        "HTTP 503",
    )
    # Written before stars, tags and share links: it imports as results without them.
    assert not any(row.favorite for row in rows.values())
    assert not Tag.objects.exists() and not Share.objects.exists()
    # And a backup made now carries the compatible keys again, rendered from the columns.
    exported = {r["id"]: r for g in export_data()["generations"] for r in g["results"]}
    assert exported[41]["paramsUsed"] == {
        "seed": 1,
        "externalImageUrl": both,
        "storageError": "timed out",
    }


@pytest.mark.django_db(transaction=True)  # the import's transaction commits for real
def test_an_import_failing_at_its_last_step_deletes_no_image_behind_a_row_that_stays(
    settings: Any, tmp_path: Path, image_storage_root: Path
) -> None:
    """The last step of an import (moving PostgreSQL's sequences past the imported ids;
    SQLite has none, so there the last insert) fails: the import is refused whole, the
    objects it wrote are deleted, and every row that stays keeps its image."""
    images = populate(results=12)
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")
    # Half the results are lost here; a merge of the backup brings them back.
    lost = sorted(images)[::2]
    GenerationResult.objects.filter(pk__in=lost).delete()
    image_storage.delete_objects(
        backend="local",
        keys=[key for pk in lost for key in (f"generations/{pk}.jpg", f"thumbnails/{pk}.webp")],
    )
    rows_before = set(GenerationResult.objects.values_list("pk", flat=True))
    postgresql = connection.vendor == "postgresql"
    last_step = "setval(" if postgresql else 'INSERT INTO "generations_generationresult"'
    failed: list[str] = []

    def fail_at_the_last_step(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if last_step in sql:
            failed.append(sql)
            raise OperationalError("the database went away")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_at_the_last_step), pytest.raises(CommandError) as refused:
        command("import_backup", str(bundle), "--merge")

    assert failed, "the import never reached its last step"
    assert "the rows could not be written" in str(refused.value)
    assert set(GenerationResult.objects.values_list("pk", flat=True)) == rows_before
    stored = GenerationResult.objects.filter(storage_status=S.STORED)
    assert stored.count() == len(images) - len(lost)
    expected = {key for row in stored for key in (row.storage_key, row.thumbnail_key)}
    on_disk = {str(path.relative_to(image_storage_root)) for path in files(image_storage_root)}
    assert on_disk == expected  # every row that stayed has its image; nothing else was left


@pytest.mark.django_db(transaction=True)  # the gallery's counts refresh when the import commits
def test_the_gallery_counts_what_an_import_restored_at_once(
    settings: Any, tmp_path: Path, staff_client: Client
) -> None:
    images = populate(results=12)
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")
    wipe(settings, tmp_path)
    cache.clear()  # counts an earlier test's gallery page cached
    assert staff_client.get("/gallery/").context["counts"]["total"] == 0

    command("import_backup", str(bundle))

    counts = staff_client.get("/gallery/").context["counts"]
    assert (counts["total"], counts["stored"]) == (12, len(images))


def test_the_import_shows_its_progress_on_the_commands_stderr(
    settings: Any, tmp_path: Path
) -> None:
    images = populate(results=6)
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")
    wipe(settings, tmp_path)

    err = io.StringIO()
    call_command("import_backup", str(bundle), stdout=io.StringIO(), stderr=err)

    assert f"importing: {len(images)}img" in err.getvalue()
    GenerationResult.objects.all().delete()
    quiet = io.StringIO()
    call_command("import_backup", str(bundle), "--merge", "-v", "0", stderr=quiet)
    assert quiet.getvalue() == ""


def test_the_command_line_shows_the_progress_bar_on_stderr(tmp_path: Path) -> None:
    """What an operator sees in a shell: the bar on stderr, the summary on stdout."""
    images = populate(results=6)
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "GENVAULT_VAR_DIR": str(tmp_path / "var"),
        "MEDIA_ROOT": str(tmp_path / "media-cli"),
    }
    assert manage("migrate", "--verbosity", "0", **env).returncode == 0

    completed = manage("import_backup", str(bundle), **env)

    assert completed.returncode == 0, completed.stderr
    assert f"importing: {len(images)}img" in completed.stderr
    assert f"results 6, images {len(images)}" in completed.stdout


@pytest.mark.parametrize("backend", ["", None, "absent"], ids=["empty", "null", "absent"])
def test_a_json_bundle_row_that_names_no_backend_is_imported_for_re_store(
    tmp_path: Path, image_storage_root: Path, backend: str | None
) -> None:
    """Even with an object at its key in our storage: the row never said it was there."""
    data = jpeg_bytes()
    image_storage.save_object_bytes(backend="local", key="generations/7.jpg", data=data)
    result: dict[str, Any] = {
        "id": 7,
        "model": SEEDREAM_4,
        "status": "SUCCESS",
        "externalImageUrl": "https://images.example.test/7.jpeg",
        "storageStatus": "stored",
        "storageKey": "generations/7.jpg",
        "contentType": "image/jpeg",
        "byteSize": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if backend != "absent":
        result["storageBackend"] = backend
    bundle = tmp_path / "backup.json"
    bundle.write_text(
        json.dumps(
            {
                "version": 1,
                "prompts": [],
                "models": [],
                "generations": [{"id": 3, "prompt": "a fox", "results": [result]}],
            }
        )
    )

    out = command("import_backup", str(bundle))

    assert "1 marked for re-store" in out
    row = GenerationResult.objects.get(pk=7)
    assert (row.storage_status, row.storage_backend, row.storage_key) == (S.PENDING, "", "")
    assert row.image_url == "https://images.example.test/7.jpeg"


def test_stars_tags_and_share_links_come_back_and_the_links_open_again(
    settings: Any, tmp_path: Path
) -> None:
    populate(results=30)
    shares = {share.pk: (share.path, share.is_active) for share in Share.objects.all()}
    starred = set(GenerationResult.objects.filter(favorite=True).values_list("pk", flat=True))
    tagged = sorted(ResultTag.objects.values_list("result_id", "tag__name"))
    bundle = tmp_path / "backup.zip"
    command("export_backup", str(bundle), "--images")
    wipe(settings, tmp_path)
    assert not Share.objects.exists() and not Tag.objects.exists()

    out = command("import_backup", str(bundle))

    assert "tags 4, shares 3" in out
    assert set(GenerationResult.objects.filter(favorite=True).values_list("pk", flat=True)) == (
        starred
    )
    assert sorted(ResultTag.objects.values_list("result_id", "tag__name")) == tagged
    assert Tag.objects.filter(name="Unused").exists()
    visitor = Client()
    for path, active in shares.values():
        assert visitor.get(path).status_code == (200 if active else 404)
    # A merge of the same bundle again adds no second copy of anything.
    command("import_backup", str(bundle), "--merge")
    assert Share.objects.count() == 3 and Tag.objects.count() == 4
    assert sorted(ResultTag.objects.values_list("result_id", "tag__name")) == tagged


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda d: d["generations"][0]["results"][0].update(tags=["a, b"]), "a tag we would not"),
        (lambda d: d["generations"][0]["results"][0].update(favorite="yes"), "favorite"),
        (lambda d: d.update(tags=[{"name": ""}]), "a tag we would not keep"),
        (lambda d: d["shares"][0].update(key="../../etc"), "no key we would make"),
        (lambda d: d["shares"][0].update(kind="everything"), "shares 'everything'"),
        (lambda d: d["shares"][0].update(resultIds=["1"]), "resultIds are not result ids"),
        (lambda d: d["shares"][0].update(expiresAt=12), "expiresAt is not a time"),
    ],
)
def test_stars_tags_and_shares_we_would_not_write_are_refused(
    change: Any, refusal: str, tmp_path: Path
) -> None:
    populate(results=12)
    data = export_data()
    change(data)
    bundle = tmp_path / "odd.json"
    bundle.write_text(json.dumps(data))
    GenerationResult.objects.all().delete()
    Generation.objects.all().delete()
    Prompt.objects.all().delete()
    with pytest.raises(CommandError, match=refusal):
        call_command("import_backup", str(bundle), stdout=io.StringIO(), stderr=io.StringIO())
