"""Operator work on stored images: checking them against their rows, moving them between backends.

`storage_verify` finds what is wrong between the rows and the objects (missing or
corrupt objects, orphans both ways) and can mark broken rows for re-store;
`result_migrate_storage` copies one result's objects to another backend, verifies
what was written and only then points the row at it. Both stream objects in
chunks, so no image is ever held whole in memory.

A migration checks each write by what the target reports for it when it reports a
digest (an S3 single-part upload's ETag, the MD5 of what it kept), and reads the
object back only when it does not (local disk, a multipart upload): a second
download of every image would cost as much as the upload.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet

from generations.models import GenerationResult
from generations.services.batches import chunked, run_bounded
from generations.signals import announce_results_changed
from storage_backends import images as image_storage
from storage_backends.images import StorageUnavailable

S = GenerationResult.StorageStatus
_ROW_FIELDS = ("pk", "storage_backend", "storage_key", "thumbnail_key", "byte_size", "sha256")

Progress = Callable[[int], object]


def object_digest(*, backend: str, key: str) -> tuple[int, str]:
    """(size, SHA-256) of an object, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    for chunk in image_storage.iter_object_chunks(backend=backend, key=key):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def copy_object_to_file(*, backend: str, key: str, dest: Path) -> tuple[int, str]:
    """Copy an object to a local file in chunks; return its (size, SHA-256)."""
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        for chunk in image_storage.iter_object_chunks(backend=backend, key=key):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


# --- verify ------------------------------------------------------------------------


@dataclass
class BrokenRow:
    result_id: int
    backend: str
    key: str
    problem: str  # "missing", "corrupt" or "unreadable"
    detail: str


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    broken: list[BrokenRow] = field(default_factory=list)
    thumbnails_missing: list[int] = field(default_factory=list)
    orphans: list[tuple[str, str]] = field(default_factory=list)
    repaired: int = 0
    thumbnails_rebuilt: int = 0
    orphans_deleted: int = 0

    def count(self, problem: str) -> int:
        return sum(1 for b in self.broken if b.problem == problem)

    @property
    def problems(self) -> int:
        return len(self.broken) + len(self.thumbnails_missing) + len(self.orphans)

    def summary(self) -> str:
        line = (
            f"checked {self.checked}, ok {self.ok}, missing {self.count('missing')}, "
            f"corrupt {self.count('corrupt')}, unreadable {self.count('unreadable')}, "
            f"thumbnails missing {len(self.thumbnails_missing)}, orphans {len(self.orphans)}"
        )
        if self.repaired or self.thumbnails_rebuilt or self.orphans_deleted:
            line += (
                f"; repaired {self.repaired}, thumbnails rebuilt {self.thumbnails_rebuilt}, "
                f"orphans deleted {self.orphans_deleted}"
            )
        return line


def stored_rows() -> Iterator[dict[str, object]]:
    return (
        GenerationResult.objects.filter(storage_status=S.STORED)
        .order_by("pk")
        .values(*_ROW_FIELDS)
        .iterator(chunk_size=1000)
    )


@dataclass(frozen=True)
class _RowCheck:
    broken: BrokenRow | None = None
    thumbnail_missing: bool = False


def _check_row(row: dict[str, object]) -> _RowCheck:
    backend, key = str(row["storage_backend"]), str(row["storage_key"])
    result_id = int(row["pk"])  # type: ignore[call-overload]
    try:
        size, sha256 = object_digest(backend=backend, key=key)
    except FileNotFoundError:
        return _RowCheck(BrokenRow(result_id, backend, key, "missing", "the object is gone"))
    except (StorageUnavailable, ImproperlyConfigured) as exc:
        return _RowCheck(BrokenRow(result_id, backend, key, "unreadable", str(exc)))
    if size != row["byte_size"] or sha256 != row["sha256"]:
        detail = (
            f"{size} bytes, SHA-256 {sha256[:12]}… "
            f"(row: {row['byte_size']} bytes, {str(row['sha256'])[:12]}…)"
        )
        return _RowCheck(BrokenRow(result_id, backend, key, "corrupt", detail))
    thumb = str(row["thumbnail_key"])
    if thumb:
        try:
            if not image_storage.object_exists(backend=backend, key=thumb):
                return _RowCheck(thumbnail_missing=True)
        except StorageUnavailable as exc:
            return _RowCheck(BrokenRow(result_id, backend, thumb, "unreadable", str(exc)))
    return _RowCheck()


def _orphans_among(backend: str, keys: list[str]) -> list[str]:
    """The keys no row points at, looked up in one query for the whole batch.

    A `storing` row's objects are not orphans: a store attempt writes its objects
    before recording them.
    """
    parsed = {key: image_storage.parse_key(key) for key in keys}
    ids = {p.result_id for p in parsed.values() if p is not None}
    rows = {
        row["pk"]: row
        for row in GenerationResult.objects.filter(pk__in=ids).values(
            *_ROW_FIELDS, "storage_status"
        )
    }
    orphans = []
    for key, found in parsed.items():
        row = rows.get(found.result_id) if found else None
        if row is None:
            orphans.append(key)
        elif row["storage_status"] == S.STORING:
            continue
        elif (
            found is not None
            and found.is_thumbnail
            and row["storage_status"] == S.STORED
            and row["storage_backend"] == backend
            and not row["thumbnail_key"]
        ):
            continue  # the derivatives stage writes a thumbnail before recording it
        elif not (
            row["storage_status"] == S.STORED
            and row["storage_backend"] == backend
            and key in (row["storage_key"], row["thumbnail_key"])
        ):
            orphans.append(key)
    return orphans


def storage_verify(
    *,
    repair: bool = False,
    delete_orphans: bool = False,
    concurrency: int = 4,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check every stored row's object (exists, size, SHA-256) and find orphans both ways.

    With `repair`, rows whose object is missing or corrupt go back to `pending`
    (their external URL in `image_url`), where the sweep re-stores them, and missing
    thumbnails are rebuilt from the stored image. With `delete_orphans`, objects no
    row points at are deleted.
    """
    report = VerifyReport()
    for row, check in run_bounded(_check_row, stored_rows(), concurrency=concurrency):
        report.checked += 1
        if isinstance(check, Exception):
            raise check
        if check.broken:
            report.broken.append(check.broken)
        elif check.thumbnail_missing:
            report.thumbnails_missing.append(int(row["pk"]))  # type: ignore[call-overload]
        else:
            report.ok += 1
        if progress:
            progress(1)
    report.broken.sort(key=lambda b: b.result_id)
    report.thumbnails_missing.sort()

    # Orphans: every listed object, checked against the rows a batch at a time, so
    # neither the listing nor the rows' keys are held whole in memory.
    for backend in image_storage.configured_backends():
        try:
            for keys in chunked(image_storage.iter_keys(backend=backend), 1000):
                report.orphans.extend((backend, key) for key in _orphans_among(backend, keys))
        except Exception as exc:  # an unreachable bucket is reported, not a crash
            report.broken.append(
                BrokenRow(0, backend, "", "unreadable", f"cannot list {backend}: {exc}")
            )

    if repair:
        report.repaired = _repair_rows(
            [b for b in report.broken if b.problem in ("missing", "corrupt")]
        )
        report.thumbnails_rebuilt = _rebuild_thumbnails(report.thumbnails_missing)
    if delete_orphans:
        for backend, key in report.orphans:
            image_storage.delete_objects(backend=backend, keys=[key])
            report.orphans_deleted += 1
    return report


def _repair_rows(broken: list[BrokenRow]) -> int:
    repaired_ids = []
    for item in broken:
        # Conditional: a row re-stored or migrated since we looked is left alone.
        updated = GenerationResult.objects.filter(
            pk=item.result_id,
            storage_status=S.STORED,
            storage_backend=item.backend,
            storage_key=item.key,
        ).mark_not_stored(
            status=S.PENDING, error=f"verify_images: the stored object is {item.problem}"
        )
        if updated:
            repaired_ids.append(item.result_id)
    # No task is queued here: the periodic sweep (or `restore_images`) stores pending rows.
    if repaired_ids:
        announce_results_changed()
    return len(repaired_ids)


def _rebuild_thumbnails(result_ids: list[int]) -> int:
    """Missing thumbnails are made again by the derivatives stage, the one place that
    makes them: each row forgets its thumbnail, then the stage runs here and now. One
    it cannot make now (storage unavailable) is left to the sweep, the row showing the
    neutral placeholder meanwhile instead of a broken image."""
    # Imported here: the derivatives stage reads stored objects with this module's helpers.
    from generations.services.derivatives import DerivativesOutcome, result_make_derivatives

    GenerationResult.objects.filter(pk__in=result_ids, storage_status=S.STORED).update(
        thumbnail_key=""
    )
    made = [result_make_derivatives(result_id=result_id) for result_id in result_ids]
    return sum(outcome is DerivativesOutcome.MADE for outcome in made)


# --- migrate -----------------------------------------------------------------------


class MigrationFailed(Exception):
    """One result could not be moved; its row and its source object are untouched."""


def results_to_migrate(*, target: str) -> QuerySet[GenerationResult]:
    return GenerationResult.objects.filter(storage_status=S.STORED).exclude(storage_backend=target)


def _copy_out(*, backend: str, key: str, dest: Path) -> tuple[int, str, str]:
    """Copy an object to a local file in chunks; return its (size, SHA-256, MD5)."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with dest.open("wb") as out:
        for chunk in image_storage.iter_object_chunks(backend=backend, key=key):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return size, sha256.hexdigest(), md5.hexdigest()


def _copy_verified(
    *,
    source: str,
    target: str,
    key: str,
    tmp: Path,
    expected_size: int | None,
    expected_sha256: str | None,
) -> None:
    """Copy one object through a temporary file and check what the target holds after:
    by the MD5 the target reports for the write, else by reading it back."""
    path = tmp / "object"
    size, sha256, md5 = _copy_out(backend=source, key=key, dest=path)
    if (expected_sha256 is not None and sha256 != expected_sha256) or (
        expected_size is not None and size != expected_size
    ):
        raise MigrationFailed(
            f"{source}:{key} does not match the row's size and SHA-256 (run verify_images)"
        )
    confirmed = image_storage.save_object_confirmed(backend=target, key=key, path=path, md5=md5)
    path.unlink()
    if confirmed:
        return
    written_size, written = object_digest(backend=target, key=key)
    if (written_size, written) != (size, sha256):
        raise MigrationFailed(f"{target}:{key} read back with other bytes than were written")


def result_migrate_storage(*, result_id: int, target: str, keep_source: bool = False) -> bool:
    """Move one stored result's image and thumbnail to `target`; True when moved.

    The row is switched with one conditional UPDATE (backend and key as read), so a
    row re-stored or deleted meanwhile is not overwritten; the source objects are
    deleted only once the row points at the copies. The stable URL never changes.
    """
    row = (
        GenerationResult.objects.filter(pk=result_id, storage_status=S.STORED)
        .values(*_ROW_FIELDS)
        .first()
    )
    if row is None or row["storage_backend"] == target:
        return False
    source, key, thumb = (
        str(row["storage_backend"]),
        str(row["storage_key"]),
        str(row["thumbnail_key"]),
    )
    written: list[str] = []
    new_thumb = thumb
    try:
        with tempfile.TemporaryDirectory(prefix="genvault-migrate-") as tmp_name:
            tmp = Path(tmp_name)
            written.append(key)
            _copy_verified(
                source=source,
                target=target,
                key=key,
                tmp=tmp,
                expected_size=row["byte_size"],  # type: ignore[arg-type]
                expected_sha256=str(row["sha256"]),
            )
            if thumb:
                try:
                    written.append(thumb)
                    _copy_verified(
                        source=source,
                        target=target,
                        key=thumb,
                        tmp=tmp,
                        expected_size=None,
                        expected_sha256=None,
                    )
                except FileNotFoundError:
                    written.pop()
                    new_thumb = ""  # thumbnails can be rebuilt; the image is what matters
    except FileNotFoundError as exc:
        image_storage.delete_objects(backend=target, keys=written)
        raise MigrationFailed(f"{source}:{exc} is missing (run verify_images)") from None
    except (StorageUnavailable, MigrationFailed) as exc:
        image_storage.delete_objects(backend=target, keys=written)
        raise MigrationFailed(str(exc)) from None

    switched = GenerationResult.objects.filter(
        pk=result_id, storage_status=S.STORED, storage_backend=source, storage_key=key
    ).update(storage_backend=target, thumbnail_key=new_thumb)
    if not switched:
        now = (
            GenerationResult.objects.filter(pk=result_id)
            .values("storage_backend", "storage_key")
            .first()
        )
        if not (now and now["storage_backend"] == target and now["storage_key"] == key):
            image_storage.delete_objects(backend=target, keys=written)
        return False
    if not keep_source:
        image_storage.delete_objects(backend=source, keys=[key, thumb])
    return True
