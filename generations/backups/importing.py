"""Restoring a backup into the database and the active storage, every row under its id.

The objects are written first, each checked as the safe stage of storing checks a
fetched image (its size under IMAGE_FETCH_MAX_BYTES, then `check_image`: its type from
its magic bytes, its header within the pixel limit, the file complete), without a
thumbnail; the rows then in one transaction, recorded `stored`. A bundle with one bad
byte, an entry name that is not ours, an unsafe URL or rows that do not fit is refused
whole, and the objects already written are deleted, so nothing is left half-imported.

Once the rows commit, each image's full decode and thumbnail are queued on the
derivatives queue, as for an image just stored: an import is as fast as the bytes can
be copied and checked, and the gallery shows a placeholder until the thumbnail is made
(by the queued task, or by the sweep should the broker be down).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management.color import no_style
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from storage_backends import images as image_storage
from storage_backends.images import StorageUnavailable

from ..checks import parse_id
from ..imaging import ImageRefused, check_image
from ..models import (
    Generation,
    GenerationResult,
    ImageModel,
    Prompt,
    ResultTag,
    Share,
    Tag,
    clean_tag_name,
    tag_key,
)
from ..services.storing import results_enqueue_derivatives
from ..signals import announce_results_changed
from .bundle import (
    Bundle,
    BundleRefused,
    check_export,
    mark_not_stored,
    open_bundle,
    params_and_columns,
    parse_time,
)

# The models the data migration creates: matched by upstream id on import.
SEEDED_UPSTREAM_IDS = {
    "doubao-seedream-4-0-250828",
    "doubao-seedream-4-5-251128",
    "doubao-seedream-5-0-260128",
    "doubao-seedream-3-0-t2i-250415",
    "doubao-seededit-3-0-i2i-250628",
}

S = GenerationResult.StorageStatus
Progress = Callable[[int], object]


@dataclass
class ImportReport:
    prompts: int = 0
    models_created: int = 0
    models_matched: int = 0
    generations: int = 0
    results: int = 0
    images: int = 0
    thumbnails_queued: int = 0  # ZIP import: derivatives tasks queued once the rows committed
    tags: int = 0  # created: a tag already here by its name is the same tag
    shares: int = 0
    unstored: int = 0  # JSON import: stored rows whose object is not in storage
    skipped: int = 0  # --merge: rows whose id already exists

    def summary(self) -> str:
        line = (
            f"prompts {self.prompts}, models {self.models_created} created / "
            f"{self.models_matched} matched, "
            f"generations {self.generations}, results {self.results}, images {self.images}"
        )
        if self.images:
            line += f", thumbnails queued {self.thumbnails_queued}"
            if self.thumbnails_queued < self.images:
                line += f" ({self.images - self.thumbnails_queued} left for the sweep)"
        if self.tags or self.shares:
            line += f", tags {self.tags}, shares {self.shares}"
        if self.unstored:
            line += f", {self.unstored} marked for re-store (object not found)"
        if self.skipped:
            line += f", skipped {self.skipped} existing rows"
        return line


def database_is_empty() -> bool:
    return not (
        Prompt.objects.exists() or Generation.objects.exists() or GenerationResult.objects.exists()
    )


def _chunked(values: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _check_merge(data: dict[str, Any]) -> None:
    """A merge adds rows beside ours and skips the ones we hold: never under another's name.

    A generation id we hold with another prompt, or a result id we hold under another
    generation, means the bundle comes from another database whose ids collide with
    ours; skipping or attaching would file its results under a stranger's generation.
    """
    prompts = {g["id"]: g["prompt"] for g in data["generations"]}
    for chunk in _chunked(list(prompts)):
        for pk, text in Generation.objects.filter(pk__in=chunk).values_list("pk", "prompt_text"):
            if text != prompts[pk]:
                raise BundleRefused(
                    f"refused: generation {pk} exists here with a different prompt "
                    "(a merge never files results under another generation)"
                )
    owners = {r["id"]: g["id"] for g in data["generations"] for r in g["results"]}
    for chunk in _chunked(list(owners)):
        for pk, generation_id in GenerationResult.objects.filter(pk__in=chunk).values_list(
            "pk", "generation_id"
        ):
            if generation_id != owners[pk]:
                raise BundleRefused(
                    f"refused: result {pk} exists here under generation {generation_id}, "
                    f"not under generation {owners[pk]} as in the bundle"
                )


class _ObjectWriter:
    """Writes objects to the active backend and remembers them, to delete on failure."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.written: list[str] = []

    def save(self, *, key: str, path: Path) -> None:
        self.written.append(key)
        image_storage.save_object_from_path(backend=self.backend, key=key, path=path)

    def undo(self) -> None:
        image_storage.delete_objects(backend=self.backend, keys=self.written)
        self.written = []


def backup_import(
    *, path: Path, merge: bool = False, progress: Progress | None = None
) -> ImportReport:
    """Restore an export (JSON or ZIP) with every row's id and every image byte for byte.

    Refuses a non-empty database unless `merge` (then rows whose id exists are
    skipped, and a bundle whose ids collide with other rows of ours is refused).
    Objects are written to the active backend first, each checked against the
    manifest, its row and the cheap checks a fetched image passes at the safe stage;
    then all rows in one transaction, which also moves the id sequences past the
    imported ids. On any failure nothing commits, the objects written are deleted and
    BundleRefused says why; once the rows commit, their objects are never touched
    again here, and their derivatives are queued.
    """
    bundle = open_bundle(path)
    try:
        check_export(bundle.data)
        if not merge and not database_is_empty():
            raise BundleRefused(
                "refused: the database already holds prompts, generations or results "
                "(import into an empty database, or pass --merge)"
            )
        if merge:
            _check_merge(bundle.data)
        report = ImportReport()
        existing_results = (
            set(GenerationResult.objects.values_list("pk", flat=True)) if merge else set()
        )
        results = [
            result
            for generation in bundle.data["generations"]
            for result in generation["results"]
            if result["id"] not in existing_results
        ]
        writer = _ObjectWriter(image_storage.active_backend())
        written: list[int] = []
        try:
            if bundle.archive is not None:
                written = _import_objects(bundle, results, writer, report, progress)
            else:
                _check_objects_in_place(results, report, progress)
            _import_rows(
                bundle.data, merge=merge, report=report, zip_import=bundle.archive is not None
            )
        except BaseException:
            writer.undo()  # no row committed: the objects written belong to none
            raise
        announce_results_changed()
        # The rows' transaction is durable, so they are committed here: a task may load them.
        report.thumbnails_queued = results_enqueue_derivatives(result_ids=written)
        return report
    finally:
        bundle.close()


def _import_objects(
    bundle: Bundle,
    results: list[dict[str, Any]],
    writer: _ObjectWriter,
    report: ImportReport,
    progress: Progress | None,
) -> list[int]:
    """Write each stored result's image, checked as the safe stage checks a fetched one;
    returns the ids of the results written.

    No pixel is decoded here: the derivatives stage decodes each image whole and makes
    its thumbnail once the rows commit, as it does for an image just stored, so the
    bundle's own thumbnail bytes are never trusted nor written. The row records what
    the bytes are (type and pixel size, from the header), not what the bundle says.
    """
    assert bundle.archive is not None
    max_bytes = settings.IMAGE_FETCH_MAX_BYTES
    written: list[int] = []
    with tempfile.TemporaryDirectory(prefix="genvault-import-") as tmp_name:
        image_path = Path(tmp_name) / "image"
        for result in results:
            if result.get("storageStatus") != S.STORED:
                continue
            result_id = result["id"]
            key = result["storageKey"]
            expected = bundle.manifest.get(key)
            if expected is None:
                raise BundleRefused(
                    f"refused: result {result_id} is stored but {key} is not in the bundle"
                )
            if expected["sha256"] != result.get("sha256") or expected["size"] != result.get(
                "byteSize"
            ):
                raise BundleRefused(
                    f"refused: {key}: the manifest and the row disagree on its SHA-256 or size"
                )
            if expected["size"] > max_bytes:
                raise BundleRefused(
                    f"refused: {key} is {expected['size']} bytes, over the limit of "
                    f"{max_bytes} (IMAGE_FETCH_MAX_BYTES)"
                )
            bundle.extract_image(key=key, dest=image_path)
            try:
                info = check_image(image_path, max_pixels=settings.IMAGE_FETCH_MAX_PIXELS)
            except ImageRefused as exc:
                raise BundleRefused(
                    f"refused: result {result_id}: {key} is not an image we store ({exc})"
                ) from None
            if key != image_storage.image_key(result_id=result_id, extension=info.extension):
                raise BundleRefused(
                    f"refused: result {result_id}: {key} holds {info.content_type} bytes, "
                    "not what its extension says"
                )
            result.update(
                contentType=info.content_type,
                width=info.width,
                height=info.height,
                thumbnailKey="",  # made by the derivatives stage
            )
            try:
                writer.save(key=key, path=image_path)
            except StorageUnavailable as exc:
                raise BundleRefused(f"refused: could not write to storage: {exc}") from None
            written.append(result_id)
            report.images += 1
            if progress:
                progress(1)
    return written


def _check_objects_in_place(
    results: list[dict[str, Any]], report: ImportReport, progress: Progress | None
) -> None:
    """A JSON-only import keeps a stored row only when its object is still where it says."""
    for result in results:
        if result.get("storageStatus") != S.STORED:
            continue
        backend = result.get("storageBackend")
        try:
            # A row that names no backend is nowhere (the active one is not its own).
            size = (
                image_storage.object_size(backend=backend, key=result["storageKey"])
                if backend and isinstance(backend, str)
                else -1
            )
        except (FileNotFoundError, StorageUnavailable, ImproperlyConfigured):
            size = -1
        if size != result.get("byteSize"):
            mark_not_stored(result, reason="not found in storage when the backup was imported")
            report.unstored += 1
        if progress:
            progress(1)


def _import_rows(
    data: dict[str, Any], *, merge: bool, report: ImportReport, zip_import: bool
) -> None:
    backend = image_storage.active_backend()
    users = {u.get_username(): u.pk for u in get_user_model().objects.all()}
    try:
        # Durable (never inside a caller's transaction): when this block ends without an
        # error the rows are committed, and `backup_import` deletes the objects only when
        # it did not.
        with transaction.atomic(durable=True):
            model_ids = _import_models(data["models"], report)
            _import_prompts(data["prompts"], merge=merge, report=report)
            references = _import_generations(
                data["generations"], users=users, merge=merge, report=report
            )
            imported = _import_results(
                data["generations"],
                model_ids=model_ids,
                backend=backend,
                zip_import=zip_import,
                report=report,
            )
            _import_tags(data, imported=imported, report=report)
            _import_shares(data, users=users, report=report)
            # Only a result the bundle carries: on a merge, an id of ours is someone else's.
            bundled = {r["id"] for g in data["generations"] for r in g["results"]}
            for generation_id, result_id in references:
                if result_id in bundled and GenerationResult.objects.filter(pk=result_id).exists():
                    Generation.objects.filter(pk=generation_id).update(
                        reference_result_id=result_id
                    )
            _reset_sequences()
    except (DatabaseError, KeyError, TypeError, ValueError) as exc:
        raise BundleRefused(
            f"refused: the rows could not be written ({type(exc).__name__}: {exc})"
        ) from None


def _reset_sequences() -> None:
    """Rows came with their ids: move the id sequences past them (PostgreSQL has them,
    SQLite needs none), so that the rows made after the import get fresh ids."""
    statements = connection.ops.sequence_reset_sql(
        no_style(), [Prompt, ImageModel, Generation, GenerationResult, Tag, Share]
    )
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _import_models(models: list[dict[str, Any]], report: ImportReport) -> dict[int, int]:
    model_ids: dict[int, int] = {}
    for item in models:
        upstream = item["upstreamModelId"]
        match = ImageModel.objects.filter(name=item["name"], upstream_model_id=upstream).first()
        if match is None and upstream in SEEDED_UPSTREAM_IDS:
            match = ImageModel.objects.filter(upstream_model_id=upstream).order_by("pk").first()
        if match is not None:
            model_ids[item["id"]] = match.pk
            report.models_matched += 1
            continue
        name = item["name"]
        if ImageModel.objects.filter(name=name).exists():
            name = f"{name} (imported {item['id']})"
        model = ImageModel(
            name=name,
            provider=item["provider"],
            upstream_model_id=upstream,
            default_params=item.get("defaultParams") or {},
            enabled=item.get("enabled", True),
        )
        if not ImageModel.objects.filter(pk=item["id"]).exists():
            model.pk = item["id"]
        model.save(force_insert=True)
        if item.get("createdAt"):
            ImageModel.objects.filter(pk=model.pk).update(created_at=parse_time(item["createdAt"]))
        model_ids[item["id"]] = model.pk
        report.models_created += 1
    return model_ids


def _import_prompts(prompts: list[dict[str, Any]], *, merge: bool, report: ImportReport) -> None:
    existing = set(Prompt.objects.values_list("pk", flat=True)) if merge else set()
    rows = [
        Prompt(pk=p["id"], text=p["text"], title=p.get("title") or "")
        for p in prompts
        if p["id"] not in existing
    ]
    report.skipped += len(prompts) - len(rows)
    Prompt.objects.bulk_create(rows, batch_size=1000)
    # auto_now_add/auto_now overwrite times on insert: put the exported ones back.
    for item in prompts:
        if item["id"] not in existing:
            Prompt.objects.filter(pk=item["id"]).update(
                created_at=parse_time(item.get("createdAt")) or timezone.now(),
                updated_at=parse_time(item.get("updatedAt")) or timezone.now(),
            )
    report.prompts += len(rows)


def _import_generations(
    generations: list[dict[str, Any]], *, users: dict[str, int], merge: bool, report: ImportReport
) -> list[tuple[int, int]]:
    existing = set(Generation.objects.values_list("pk", flat=True)) if merge else set()
    prompt_ids = set(Prompt.objects.values_list("pk", flat=True))
    rows = []
    references = []
    for item in generations:
        if item["id"] in existing:
            report.skipped += 1
            continue
        rows.append(
            Generation(
                pk=item["id"],
                prompt_id=item.get("promptId") if item.get("promptId") in prompt_ids else None,
                prompt_text=item["prompt"],
                size=item.get("size") or "",
                params=item.get("params") or {},
                reference_image_url=item.get("referenceImageUrl") or "",
                created_by_id=users.get(item.get("createdBy") or ""),
                created_at=parse_time(item.get("createdAt")) or timezone.now(),
            )
        )
        if item.get("referenceResultId"):
            references.append((item["id"], item["referenceResultId"]))
    Generation.objects.bulk_create(rows, batch_size=1000)
    report.generations += len(rows)
    return references


def _import_results(
    generations: list[dict[str, Any]],
    *,
    model_ids: dict[int, int],
    backend: str,
    zip_import: bool,
    report: ImportReport,
) -> set[int]:
    """Create the bundle's results we do not hold; returns their ids."""
    existing = set(GenerationResult.objects.values_list("pk", flat=True))
    rows = []
    for generation in generations:
        for item in generation.get("results", []):
            if item["id"] in existing:
                report.skipped += 1
                continue
            storage_status = item.get("storageStatus") or ""
            if storage_status == S.STORING:
                storage_status = S.PENDING  # the claim died with the old database
            stored = storage_status == S.STORED
            row = GenerationResult(
                pk=item["id"],
                generation_id=generation["id"],
                model_id=model_ids.get(item["modelId"])
                if item.get("modelId") is not None
                else None,
                upstream_model_id=item["model"],
                image_index=item.get("imageIndex") or 0,
                status=item["status"],
                error_code=item.get("errorCode") or "",
                error_message=item.get("errorMessage") or "",
                image_url=item.get("imageUrl") or "",
                external_url_expires_at=parse_time(item.get("externalImageUrlExpiresAt")),
                storage_status=storage_status,
                storage_backend=(backend if zip_import else item.get("storageBackend") or "")
                if stored
                else "",
                storage_key=(item.get("storageKey") or "") if stored else "",
                thumbnail_key=(item.get("thumbnailKey") or "") if stored else "",
                content_type=item.get("contentType") or "",
                byte_size=item.get("byteSize"),
                sha256=item.get("sha256") or "",
                width=item.get("width"),
                height=item.get("height"),
                storage_attempts=item.get("storageAttempts") or 0,
                stored_at=parse_time(item.get("storedAt")),
                created_at=parse_time(item.get("createdAt")) or timezone.now(),
                favorite=item.get("favorite") is True,
                **params_and_columns(item),
            )
            if stored:
                row.image_url = row.stable_url
            rows.append(row)
    GenerationResult.objects.bulk_create(rows, batch_size=1000)
    report.results += len(rows)
    return {row.pk for row in rows}


def _import_tags(data: dict[str, Any], *, imported: set[int], report: ImportReport) -> None:
    """Every tag of the bundle (one already here by another case is the same tag), and
    the imported results' links to theirs. A merge leaves the tags of results it skips
    as they are here."""
    named: dict[str, dict[str, Any]] = {}
    for item in data.get("tags", []):
        name = clean_tag_name(item["name"])
        named.setdefault(
            tag_key(name),
            {"name": name, "createdAt": item.get("createdAt"), "id": parse_id(item.get("id"))},
        )
    wanted: list[tuple[int, str]] = []
    for generation in data["generations"]:
        for item in generation["results"]:
            if item["id"] not in imported:
                continue
            for raw in item.get("tags", []):
                name = clean_tag_name(raw)
                named.setdefault(tag_key(name), {"name": name, "createdAt": None, "id": None})
                wanted.append((item["id"], tag_key(name)))
    existing = set(Tag.objects.filter(key__in=named).values_list("key", flat=True))
    new_keys = [key for key in named if key not in existing]
    taken = set(Tag.objects.values_list("pk", flat=True))
    Tag.objects.bulk_create(
        [
            # Under its id when that is free here, as every other row.
            Tag(
                pk=named[key]["id"] if named[key]["id"] not in taken else None,
                name=named[key]["name"],
                key=key,
            )
            for key in new_keys
        ],
        batch_size=1000,
    )
    report.tags += len(new_keys)
    ids = dict(Tag.objects.filter(key__in=named).values_list("key", "pk"))
    for key in new_keys:  # auto_now_add wrote now: put the exported time back
        created = parse_time(named[key]["createdAt"])
        if created is not None:
            Tag.objects.filter(pk=ids[key]).update(created_at=created)
    ResultTag.objects.bulk_create(
        (ResultTag(result_id=result_id, tag_id=ids[key]) for result_id, key in wanted),
        ignore_conflicts=True,
        batch_size=1000,
    )


def _import_shares(data: dict[str, Any], *, users: dict[str, int], report: ImportReport) -> None:
    """The bundle's share links, under their ids and keys (so that, with the same
    SECRET_KEY, their links open again), holding those of their results that are here.
    A merge skips a share whose id or key is taken."""
    items = data.get("shares", [])
    taken_ids = set(Share.objects.values_list("pk", flat=True))
    taken_keys = set(Share.objects.values_list("key", flat=True))
    results_here = set(
        GenerationResult.objects.filter(
            pk__in={i for item in items for i in item["resultIds"]}
        ).values_list("pk", flat=True)
    )
    links: list[Any] = []
    for item in items:
        if item["id"] in taken_ids or item["key"] in taken_keys:
            continue  # here already (a merge of the same backup again)
        share = Share.objects.create(
            pk=item["id"],
            key=item["key"],
            kind=item["kind"],
            tag_name=item.get("tag") or "",
            created_by_id=users.get(item.get("createdBy") or ""),
            created_at=parse_time(item.get("createdAt")) or timezone.now(),
            expires_at=parse_time(item["expiresAt"]) or timezone.now(),
            revoked_at=parse_time(item.get("revokedAt")),
            revoked_by_id=users.get(item.get("revokedBy") or ""),
        )
        links.extend(
            Share.results.through(share_id=share.pk, generationresult_id=result_id)
            for result_id in item["resultIds"]
            if result_id in results_here
        )
        report.shares += 1
    Share.results.through.objects.bulk_create(links, ignore_conflicts=True, batch_size=1000)
