"""The image storage: which backend holds an object, object keys, reads and writes.

Everything outside this app asks here for "the image storage"; only this app knows
which classes implement it. Each backend in `backends/` answers the same methods
(`ImageStorage`), so nothing here knows that one of them speaks S3. Only a backend's
storage and network errors become `StorageUnavailable`: a bug surfaces as itself
instead of being retried as "could not write".
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from .conf import BACKENDS

logger = logging.getLogger(__name__)

IMAGE_PREFIX = "generations"
THUMBNAIL_PREFIX = "thumbnails"
# Reference images uploaded for a generation: kept with it, so that it can be continued.
REFERENCE_PREFIX = "references"


class StorageUnavailable(Exception):
    """The storage refused or failed a read or write (endpoint down, disk full...)."""


class WrittenBytesDiffer(StorageUnavailable):
    """The storage reports other bytes than were sent for a write (its MD5 differs)."""


def active_backend() -> str:
    """The backend that new objects are written to."""
    return str(settings.STORAGE_MODE)


def configured_backends() -> list[str]:
    return [name for name in BACKENDS if f"images_{name}" in settings.STORAGES]


class ImageStorage(Protocol):
    """What every backend in `backends/` answers, besides Django's Storage API."""

    backend_name: str
    unavailable_errors: tuple[type[BaseException], ...]

    def save(self, name: str | None, content: File, max_length: int | None = None) -> str: ...
    def open(self, name: str, mode: str = "rb") -> File: ...
    def delete(self, name: str) -> None: ...
    def exists(self, name: str) -> bool: ...
    def size(self, name: str) -> int: ...
    def listdir(self, path: str) -> tuple[list[str], list[str]]: ...
    def iter_chunks(self, key: str, chunk_size: int) -> Iterator[bytes]: ...
    def save_reporting_md5(self, key: str, path: Path, *, md5: str) -> str | None: ...
    def direct_url(self, key: str, *, download_name: str | None = None) -> str | None: ...
    def public_url(self, key: str) -> str | None: ...
    def internal_redirect(self, key: str) -> str | None: ...
    def is_not_found(self, exc: BaseException) -> bool: ...


def image_storage(backend: str | None = None) -> ImageStorage:
    """The storage for `backend` (the active one when None)."""
    name = backend or active_backend()
    if name not in BACKENDS:
        raise ImproperlyConfigured(f"unknown storage backend {name!r}")
    alias = f"images_{name}"
    if alias not in settings.STORAGES:
        raise ImproperlyConfigured(
            f"storage backend {name!r} is not configured (set the STORAGE_S3_* variables)"
        )
    return cast(ImageStorage, storages[alias])


# The image types genvault keeps, and the extension each is stored and downloaded under.
IMAGE_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
CONTENT_TYPES = {extension: content_type for content_type, extension in IMAGE_EXTENSIONS.items()}


def image_key(*, result_id: int, extension: str) -> str:
    """The object key of a result's image: made from its id, never from user input."""
    if extension not in CONTENT_TYPES:
        raise ValueError(f"unexpected image extension {extension!r}")
    return f"{IMAGE_PREFIX}/{int(result_id)}.{extension}"


def thumbnail_key(*, result_id: int) -> str:
    return f"{THUMBNAIL_PREFIX}/{int(result_id)}.webp"


def reference_key(*, generation_id: int, position: int, extension: str) -> str:
    """The object key of an uploaded reference image: made from the generation's id and
    the reference's place in it, never from the uploaded file's name."""
    if extension not in ("jpg", "png", "webp"):
        raise ValueError(f"unexpected image extension {extension!r}")
    return f"{REFERENCE_PREFIX}/{int(generation_id)}-{int(position)}.{extension}"


# The only spelling of our keys: what `image_key` and `thumbnail_key` make, and nothing else
# (ids as 1 to 19 ASCII digits, so that a hostile key can never overflow `int()`).
_KEY_RE = re.compile(
    rf"{IMAGE_PREFIX}/(?P<image>[0-9]{{1,19}})\.(?P<ext>jpg|png|webp)"
    rf"|{THUMBNAIL_PREFIX}/(?P<thumb>[0-9]{{1,19}})\.webp"
)


@dataclass(frozen=True)
class ObjectKey:
    result_id: int
    is_thumbnail: bool
    extension: str


def parse_key(key: str) -> ObjectKey | None:
    """What an object key of ours names, or None for a key we never make."""
    match = _KEY_RE.fullmatch(key)  # not `$`, which also matches before a final newline
    if match is None:
        return None
    if match["thumb"]:
        return ObjectKey(result_id=int(match["thumb"]), is_thumbnail=True, extension="webp")
    return ObjectKey(result_id=int(match["image"]), is_thumbnail=False, extension=match["ext"])


def save_object_from_path(*, backend: str, key: str, path: Path) -> None:
    """Write the file at `path` to `key`, streaming; the same key again overwrites."""
    storage = image_storage(backend)
    with _unavailable_as(storage, f"could not write {key}"), path.open("rb") as fh:
        saved = storage.save(key, File(fh, name=key))
    if saved != key:  # pragma: no cover - both backends overwrite
        raise StorageUnavailable(f"storage wrote {saved!r} instead of {key!r}")


def save_object_confirmed(*, backend: str, key: str, path: Path, md5: str) -> bool:
    """Write the file at `path` (`md5`: its MD5 in hex) to `key`, and say whether the
    storage confirmed that it holds these very bytes.

    True when it reported their MD5 for the write (an S3 single-part upload: sent with
    its Content-MD5, which the endpoint checks, and answered with the ETag of what it
    kept); False when it reports none (local disk, a multipart or KMS-encrypted upload)
    and only reading the object back can tell. Other bytes reported raise
    WrittenBytesDiffer, the object left at `key` for the caller to delete.
    """
    storage = image_storage(backend)
    with _unavailable_as(storage, f"could not write {key}"):
        reported = storage.save_reporting_md5(key, path, md5=md5)
    if reported is None:
        return False
    if reported != md5.lower():
        raise WrittenBytesDiffer(
            f"{backend}:{key} was written, but the storage reports MD5 {reported}, not {md5}"
        )
    return True


def save_object_bytes(*, backend: str, key: str, data: bytes) -> None:
    storage = image_storage(backend)
    with _unavailable_as(storage, f"could not write {key}"):
        storage.save(key, ContentFile(data, name=key))


def delete_objects(*, backend: str, keys: list[str]) -> None:
    """Delete objects, ignoring those already gone; storage failures are logged, not raised."""
    if not backend:
        return
    try:
        storage = image_storage(backend)
    except ImproperlyConfigured:
        logger.warning("cannot delete %s: backend %s not configured", keys, backend)
        return
    for key in keys:
        if not key:
            continue
        try:
            storage.delete(key)
        except storage.unavailable_errors as exc:
            logger.warning("could not delete %s from %s: %s", key, backend, _describe(exc))


def open_object(*, backend: str, key: str) -> IO[bytes]:
    storage = image_storage(backend)
    with _unavailable_as(storage, f"could not read {key}", key=key):
        return storage.open(key, "rb")


def iter_object_chunks(*, backend: str, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """The object's bytes in chunks, never the whole object in memory."""
    storage = image_storage(backend)
    with _unavailable_as(storage, f"could not read {key}", key=key):
        yield from storage.iter_chunks(key, chunk_size)


def object_exists(*, backend: str, key: str) -> bool:
    storage = image_storage(backend)
    with _unavailable_as(storage, f"could not check {key}"):
        return bool(storage.exists(key))


def object_size(*, backend: str, key: str) -> int:
    storage = image_storage(backend)
    with _unavailable_as(storage, f"could not stat {key}", key=key):
        return int(storage.size(key))


def redirect_url(*, backend: str, key: str, download_name: str | None = None) -> str | None:
    """A URL the client can fetch the object from directly (presigned or public), if any."""
    return image_storage(backend).direct_url(key, download_name=download_name)


def public_url(*, backend: str, key: str) -> str | None:
    """The object's URL on a public bucket (STORAGE_PUBLIC_BASE_URL), which anyone may
    fetch for as long as the object lives; None when the only URL is presigned or there
    is none. A presigned URL of a private bucket is never one to hand to a third party."""
    return image_storage(backend).public_url(key)


def internal_redirect_path(*, backend: str, key: str) -> str | None:
    """The path a front web server sends the object from (X-Accel-Redirect), if it does.

    Only for a key of ours: one an edited or imported row holds (`../`, an absolute
    path) is never handed to nginx, whose other locations it could reach.
    """
    if parse_key(key) is None:
        return None
    return image_storage(backend).internal_redirect(key)


def iter_keys(*, backend: str) -> Iterator[str]:
    """Every image and thumbnail key the backend holds under our prefixes."""
    storage = image_storage(backend)
    for prefix in (IMAGE_PREFIX, THUMBNAIL_PREFIX):
        try:
            _dirs, files = storage.listdir(prefix)
        except FileNotFoundError:
            continue
        for name in files:
            yield f"{prefix}/{name}"


def check_storage() -> str:
    """'ok' when the active storage answers, else a short error word (no secrets)."""
    storage = image_storage()
    try:
        storage.exists("healthz-probe")
    except storage.unavailable_errors as exc:
        logger.warning("storage health check failed: %s", _describe(exc))
        return "unavailable"
    return "ok"


@contextlib.contextmanager
def _unavailable_as(storage: ImageStorage, what: str, *, key: str = "") -> Iterator[None]:
    """The backend's storage and network errors as StorageUnavailable (or, for a missing
    `key`, FileNotFoundError); any other exception is a bug and surfaces as itself."""
    try:
        yield
    except SuspiciousFileOperation:  # a key outside the storage: the caller's 400
        raise
    except storage.unavailable_errors as exc:
        if key and storage.is_not_found(exc):
            raise FileNotFoundError(key) from exc
        raise StorageUnavailable(f"{what}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
